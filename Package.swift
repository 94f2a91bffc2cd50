// swift-tools-version:6.0
import PackageDescription

let package = Package(
  name: "ProcessPool",
  products: [
    .library(name: "ProcessPool", targets: ["ProcessPool"])
  ],
  targets: [
    // Only what Swift cannot do: the pre-main worker hook, posix_spawn's closefrom, prctl.
    .target(name: "CProcessPoolShims"),
    .target(
      name: "ProcessPool",
      dependencies: ["CProcessPoolShims"],
      swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
    ),
    .executableTarget(
      name: "Countdown",
      dependencies: ["ProcessPool"],
      path: "Examples/Countdown"
    ),
    .executableTarget(
      name: "Benchmarks",
      dependencies: ["ProcessPool"],
      path: "Benchmarks",
      exclude: ["compare.sh", "python_peers.py"]
    ),
    .testTarget(
      name: "ProcessPoolTests",
      dependencies: ["ProcessPool", "CProcessPoolShims"]
    ),
  ],
  swiftLanguageModes: [.v6]
)
