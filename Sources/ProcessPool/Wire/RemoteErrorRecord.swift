/// An error thrown in a worker, as it crosses the socket. A `Codable` error travels whole and
/// comes back as its own type when the parent can find that type by name; any other error keeps
/// its type name and description.
struct RemoteErrorRecord: Codable {
  var typeName: String
  var mangledName: String?
  var payload: [UInt8]?
  var description: String

  init(_ error: any Error) {
    typeName = String(reflecting: type(of: error))
    description = String(describing: error)
    if let encodable = error as? any Encodable & Decodable,
      let name = _mangledTypeName(type(of: error)),
      let bytes = try? BinaryEncoder.encode(encodable)
    {
      mangledName = name
      payload = bytes
    }
  }

  /// The error to throw in the parent.
  func rebuild(workerPID: Int32) -> any Error {
    if let mangledName, let payload,
      let type = _typeByName(mangledName) as? any (Error & Decodable).Type,
      let error = try? Self.decode(type, payload)
    {
      return error
    }
    return ProcessPoolError(.remote, description, workerPID: workerPID, remoteTypeName: typeName)
  }

  private static func decode<E: Error & Decodable>(_ type: E.Type, _ bytes: [UInt8]) throws -> any Error {
    try BinaryDecoder.decode(type, from: bytes)
  }
}
