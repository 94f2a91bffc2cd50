/// What a future tells its outcome to, once, when it finishes or is cancelled (a `map` counts its
/// progress with it). A class so that many futures share one (a map's full chunks do).
final class FinishHook<Output: Sendable>: Sendable {
  let body: @Sendable (Result<Output, any Error>) -> Void

  init(_ body: @escaping @Sendable (Result<Output, any Error>) -> Void) {
    self.body = body
  }
}
