// slmpack build step for an Android app (Gradle Kotlin DSL). Apply from app/build.gradle.kts:
//     apply(from = rootProject.file("slmpack.gradle.kts"))
// It runs `slmpack build` as an Exec task whose inputs are the recipe and every input file that
// `slmpack build --list --json` names, and whose output is the assets folder, so Gradle's
// up-to-date check skips it when nothing changed (slmpack's own cache then re-exports only the
// packages whose inputs changed). Packages land in src/main/assets/slmpack/<name>/<target>/,
// where the app opens them (ExecuTorch / LiteRT / ONNX Runtime need a file path: copy the asset
// to filesDir once, or keep it uncompressed and mmap it, see androidResources below).
// NOT RUN: this machine's Gradle (Debian 4.4.1) cannot build Kotlin DSL / AGP projects offline.
import groovy.json.JsonSlurper

val slmpackExe = providers.gradleProperty("slmpack.exe").orElse("slmpack")
val slmpackRecipe = rootProject.file("slmpack.toml")
val slmpackAssets = layout.projectDirectory.dir("src/main/assets/slmpack")

fun slmpackInputs(): List<File> {
    val out = java.io.ByteArrayOutputStream()
    exec {
        commandLine(slmpackExe.get(), "build", slmpackRecipe.path, "--out", slmpackAssets.asFile.path,
                    "--list", "--json")
        standardOutput = out
    }
    @Suppress("UNCHECKED_CAST")
    val pkgs = (JsonSlurper().parseText(out.toString()) as Map<String, Any>)["packages"] as List<Map<String, Any>>
    return pkgs.flatMap { (it["inputs"] as List<String>).map(::File) }.distinct()
}

val slmpackBuild by tasks.registering(Exec::class) {
    group = "build"
    description = "Export and validate the on-device model packages listed in slmpack.toml"
    inputs.file(slmpackRecipe)
    inputs.files(provider { slmpackInputs() })
    outputs.dir(slmpackAssets)
    commandLine(slmpackExe.get(), "build", slmpackRecipe.path, "--out", slmpackAssets.asFile.path)
}

tasks.matching { it.name.startsWith("merge") && it.name.endsWith("Assets") }.configureEach {
    dependsOn(slmpackBuild)
}

// model files must stay uncompressed in the APK to be memory-mapped
extensions.findByName("android")?.let {
    (it as com.android.build.gradle.BaseExtension).aaptOptions.noCompress("pte", "tflite", "litertlm", "onnx", "data")
}
