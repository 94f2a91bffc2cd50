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
        "\(String(reflecting: type)) cannot be found by name in a worker process; "
          + "declare it at file scope or in a type, not private, fileprivate or inside a function")
    }
    names.withLock { $0[key] = name }
    return name
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
