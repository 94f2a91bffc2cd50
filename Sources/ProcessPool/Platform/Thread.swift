import CProcessPoolShims

#if canImport(Glibc)
  import Glibc
#endif

/// A detached OS thread for blocking work (the pool's I/O loop, the worker's socket reader),
/// which must never run on Swift's cooperative pool.
enum OSThread {
  private final class Body {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
  }

  /// Starts `body` on a new detached thread named `name` (at most 15 characters on Linux).
  static func start(name: String, _ body: @escaping @Sendable () -> Void) throws(Errno) {
    let threadName = String(name.prefix(15))
    let context = Unmanaged.passRetained(
      Body {
        pp_set_thread_name(threadName)
        body()
      }
    ).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(
      &thread, nil,
      { raw in
        let body = Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue()
        body.run()
        return nil
      }, context)
    guard rc == 0 else {
      Unmanaged<Body>.fromOpaque(context).release()
      throw Errno(code: rc, call: "pthread_create")
    }
    pthread_detach(thread)
  }
}
