import Testing

@testable import ProcessPool

#if canImport(Glibc)
  import Glibc
#endif

/// What a test may leave behind: nothing. Children of this process (running or zombie) and the
/// sockets, pipes, pidfds and memfds it holds are compared before and after. The fork server (one
/// per process, started with the first local worker, kept until the process ends) and its socket
/// do not count; its workers do, as children of the server (`ForkServerTests` checks they are all
/// reaped).
struct LeakCheck {
  let descriptors: [String]

  init() {
    descriptors = LeakCheck.socketsAndPipes()
  }

  /// Fails the test if a child process or a socket or pipe descriptor was left behind.
  func verify(sourceLocation: SourceLocation = #_sourceLocation) {
    let server = ForkServer.current
    let children = LeakCheck.workerProcesses()
    #expect(children.isEmpty, "child processes left behind: \(children)", sourceLocation: sourceLocation)
    let serverSocket = server.map { "\($0.socket)->" }
    let notServer = { (descriptor: String) in serverSocket == nil || !descriptor.hasPrefix(serverSocket!) }
    let before = descriptors.filter(notServer)
    let now = LeakCheck.socketsAndPipes().filter(notServer)
    #expect(
      now.count <= before.count, "descriptors left open: \(now) (before: \(before))",
      sourceLocation: sourceLocation)
  }

  /// Workers and other processes this process started, zombies included: its children but the
  /// fork server, and the fork server's children.
  static func workerProcesses() -> [Int32] {
    let server = ForkServer.current?.pid
    return childPIDs().filter { $0 != server } + (server.map { childPIDs(of: $0) } ?? [])
  }

  /// The pids whose parent is `parent` (this process by default), zombies included.
  static func childPIDs(of parent: Int32 = getpid()) -> [Int32] {
    let me = parent
    var result: [Int32] = []
    guard let dir = opendir("/proc") else { return [] }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) {
        String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
      }
      guard let pid = Int32(name), let stat = readFile("/proc/\(pid)/stat") else { continue }
      // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
      guard let close = stat.lastIndex(of: ")") else { continue }
      let fields = stat[stat.index(after: close)...].split(separator: " ")
      if fields.count > 1, Int32(fields[1]) == me { result.append(pid) }
    }
    return result
  }

  static func socketsAndPipes() -> [String] {
    var result: [String] = []
    guard let dir = opendir("/proc/self/fd") else { return [] }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) {
        String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
      }
      guard Int32(name) != nil else { continue }
      var buffer = [CChar](repeating: 0, count: 256)
      let count = readlink("/proc/self/fd/\(name)", &buffer, 255)
      guard count > 0 else { continue }
      let target = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
      // Sockets, pipes, and the pool's pidfds and memfds (a worker's reply ring and its shared
      // values; nothing else in the process makes those).
      if target.hasPrefix("socket:") || target.hasPrefix("pipe:") || target == "anon_inode:[pidfd]"
        || target.hasPrefix("/memfd:")
      {
        result.append("\(name)->\(target)")
      }
    }
    return result
  }

  static func readFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = read(fd, &chunk, chunk.count)
      if n <= 0 { break }
      bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// Runs `body` with a new pool, shuts it down, waits for its I/O thread, and checks for leaks.
func withPool(
  _ configuration: ProcessPoolExecutor.Configuration = .workers(2),
  initializer: (any WorkerInitializer)? = nil,
  sourceLocation: SourceLocation = #_sourceLocation,
  _ body: (ProcessPoolExecutor) async throws -> Void
) async throws {
  let check = LeakCheck()
  do {
    let pool = try ProcessPoolExecutor(configuration: configuration, initializer: initializer)
    do {
      try await body(pool)
    } catch {
      await pool.shutdown(wait: true, cancelFutures: true)
      pool.core.waitForIOThread()
      throw error
    }
    await pool.shutdown(wait: true)
    pool.core.waitForIOThread()
  }
  check.verify(sourceLocation: sourceLocation)
}

extension ProcessPoolExecutor.Configuration {
  static func workers(_ count: Int) -> Self {
    var configuration = Self()
    configuration.maxWorkers = count
    return configuration
  }
}
