// swift-tools-version:5.9
// A SwiftPM build-tool plugin that runs `slmpack build` on the package's slmpack.toml and adds the
// packages as resources. Source only: NOT RUN here (no Swift toolchain for Apple platforms on Linux).
import PackageDescription

let package = Package(
    name: "SlmpackPlugin",
    products: [.plugin(name: "SlmpackPlugin", targets: ["SlmpackPlugin"])],
    targets: [.plugin(name: "SlmpackPlugin", capability: .buildTool())]
)
