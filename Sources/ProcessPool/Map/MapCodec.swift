/// The per-item code of a `map` on the way out: pulling and encoding the inputs. Built by the
/// inlinable `map` in the caller's module, so it is compiled for the concrete input and sequence
/// types (the iterator decodes the outputs the same way). The library's own generic code runs
/// unspecialised, which costs runtime metadata lookups and value-witness calls for every item;
/// here it costs one closure call per chunk.
@usableFromInline
struct MapCodec {
  /// Pulls up to `count` inputs and appends each as a block; returns how many were pulled and,
  /// by position, the error of each that could not be encoded (its block is left out).
  @usableFromInline let pull: (_ count: Int, _ writer: ByteWriter) -> (pulled: Int, failures: [Int: ProcessPoolError])

  @inlinable
  init<T: ProcessTask, Inputs: IteratorProtocol>(_: T.Type, _ inputs: Inputs) where Inputs.Element == T.Input {
    var inputs = inputs
    pull = { count, writer in
      var pulled = 0
      var failures: [Int: ProcessPoolError] = [:]
      while pulled < count, let input = inputs.next() {
        do {
          try writer.appendBlock(input)
        } catch {
          failures[pulled] = inputEncodingFailure(T.self, error)
        }
        pulled += 1
      }
      return (pulled, failures)
    }
  }
}

extension MapCodec {
  /// Whether an input may be pulled on a thread other than its map's caller: an array or an
  /// integer range runs no code of the caller's (another input's iterator may hold closures
  /// isolated to the caller's actor, which must not run elsewhere).
  @inlinable
  static func pullsAnywhere<Inputs: Sequence, Input>(_ inputs: Inputs, _: Input.Type) -> Bool {
    inputs is [Input] || inputs is ContiguousArray<Input> || inputs is ArraySlice<Input> || inputs is Range<Int>
      || inputs is ClosedRange<Int>
  }
}

/// The error of a map input that cannot be encoded.
@usableFromInline
func inputEncodingFailure(_ task: Any.Type, _ error: any Error) -> ProcessPoolError {
  ProcessPoolError.encoding(of: "an input of \(task)", error)
}
