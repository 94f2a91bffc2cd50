import Synchronization

/// Finds a task's type by its mangled name, on both sides of the socket.
///
/// The parent checks at `submit` that the name resolves back to the same type, because a type
/// that does not (private, fileprivate, function-local) cannot be found in the worker either;
/// failing at the call site beats failing in the child.
enum TaskTypeRegistry {
  private static let names = Mutex<[ObjectIdentifier: String]>([:])
  private static let types = Mutex<[String: any ProcessTask.Type]>([:])
  private static let initializers = Mutex<[String: any WorkerInitializer.Type]>([:])

  /// The mangled name the worker will resolve, or an `unknownTaskType` error.
  static func name<T>(for type: T.Type) throws(ProcessPoolError) -> String {
    let key = ObjectIdentifier(type)
    if let known = names.withLock({ $0[key] }) { return known }
    guard let name = _mangledTypeName(type), let resolved = _typeByName(name), resolved == type else {
      throw ProcessPoolError(
        .unknownTaskType,
        "\(writtenName(type)) cannot be found by name in a worker process; "
          + "declare it at file scope or in a type, not private, fileprivate or inside a function")
    }
    names.withLock { $0[key] = name }
    return name
  }

  /// Every name `name(for:)` has handed out in this process (what a fork server looks up ahead).
  static func resolvedNames() -> [String] { names.withLock { Array($0.values) } }

  /// How many names `name(for:)` has handed out.
  static var resolvedCount: Int { names.withLock { $0.count } }

  /// The type's name as a user writes it: `String(reflecting:)` without the runtime's
  /// `(unknown context at $…).` that stands for a private or local scope, and with a local
  /// type's `(LocalTask #1 in f())` as `LocalTask`.
  static func writtenName(_ type: Any.Type) -> String {
    var result = ""
    var rest = Substring(String(reflecting: type))
    let unknown = "(unknown context at $"
    while let start = rest.firstRange(of: unknown)?.lowerBound {
      result += rest[..<start]
      rest = rest[start...]
      // Skip to the matching `)` and the `.` after it.
      guard let close = rest.firstIndex(of: ")") else { break }
      rest = rest[rest.index(after: close)...]
      if rest.first == "." { rest = rest.dropFirst() }
    }
    result += rest
    // A local type: `(LocalTask #1 in f())` becomes `LocalTask`.
    while let open = result.firstIndex(of: "("), result[open...].hasPrefix("("),
      let hash = result[open...].firstRange(of: " #")?.lowerBound, let inRange = result[hash...].firstRange(of: " in "),
      let close = result[inRange.upperBound...].firstIndex(of: ")")
    {
      var depth = 0
      var end = close
      // The context may hold parentheses itself (`f()`): find the `)` closing `(`.
      for index in result[open...].indices {
        if result[index] == "(" { depth += 1 }
        if result[index] == ")" {
          depth -= 1
          if depth == 0 {
            end = index
            break
          }
        }
      }
      result.replaceSubrange(open...end, with: result[result.index(after: open)..<hash])
    }
    return result
  }

  static func task(named name: String) -> (any ProcessTask.Type)? {
    if let known = types.withLock({ $0[name] }) { return known }
    guard let type = _typeByName(name) as? any ProcessTask.Type else { return nil }
    types.withLock { $0[name] = type }
    return type
  }

  static func initializer(named name: String) -> (any WorkerInitializer.Type)? {
    if let known = initializers.withLock({ $0[name] }) { return known }
    guard let type = _typeByName(name) as? any WorkerInitializer.Type else { return nil }
    initializers.withLock { $0[name] = type }
    return type
  }
}
