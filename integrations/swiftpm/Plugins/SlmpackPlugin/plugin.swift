import Foundation
import PackagePlugin

/// Runs `slmpack build <target dir>/slmpack.toml --out <plugin work dir>/slmpack` before the target
/// compiles. Inputs: the recipe (slmpack's content-addressed cache decides what to re-export);
/// output: the package folder, which SwiftPM copies into the bundle as a resource.
/// `slmpack` must be on PATH or named by SLMPACK. Not run on Linux: see README.
@main
struct SlmpackPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let recipe = target.directory.appending("slmpack.toml")
        guard FileManager.default.fileExists(atPath: recipe.string) else { return [] }
        let out = context.pluginWorkDirectory.appending("slmpack")
        let exe = ProcessInfo.processInfo.environment["SLMPACK"] ?? "/usr/bin/env"
        let args = exe == "/usr/bin/env" ? ["slmpack", "build", recipe.string, "--out", out.string]
                                         : ["build", recipe.string, "--out", out.string]
        return [.prebuildCommand(displayName: "slmpack build \(recipe.lastComponent)",
                                 executable: Path(exe), arguments: args, outputFilesDirectory: out)]
    }
}
