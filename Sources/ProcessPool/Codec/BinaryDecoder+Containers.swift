/// The `Decoder` handed to a value's `init(from:)`, positioned at that value.
struct ValueDecoder: Decoder {
  let reader: ByteReader
  let offset: Int
  let codingPath: [any CodingKey]
  var userInfo: [CodingUserInfoKey: Any] { [:] }

  init(reader: ByteReader, offset: Int, codingPath: [any CodingKey]) {
    self.reader = reader
    self.offset = offset
    self.codingPath = codingPath
  }

  func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
    KeyedDecodingContainer(try KeyedReader<Key>(reader: reader, offset: offset, codingPath: codingPath))
  }

  func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
    try UnkeyedReader(reader: reader, offset: offset, codingPath: codingPath)
  }

  func singleValueContainer() throws -> any SingleValueDecodingContainer {
    SingleValueReader(reader: reader, offset: offset, codingPath: codingPath)
  }
}

/// Reads a keyed container. Keys read in the order they were written (synthesized `Codable`)
/// are found by walking a cursor; anything else falls back to an index built once.
final class KeyedReader<Key: CodingKey>: KeyedDecodingContainerProtocol {
  let reader: ByteReader
  let codingPath: [any CodingKey]
  private let count: Int
  private let first: Int
  private let end: Int
  /// The next entry in written order, and its number.
  private var cursor: Int
  private var cursorIndex = 0
  private var index: [String: Int]?
  private var lastFound: (key: String, offset: Int)?

  init(reader: ByteReader, offset: Int, codingPath: [any CodingKey]) throws {
    self.reader = reader
    self.codingPath = codingPath
    (count, first, end) = try reader.container(.keyed, at: offset, codingPath)
    cursor = first
  }

  /// The offset of the value for `key`, or nil when absent.
  private func find(_ key: Key) throws -> Int? { try find(name: key.stringValue) }

  private func find(name: String) throws -> Int? {
    if let lastFound, lastFound.key == name { return lastFound.offset }
    if cursorIndex < count && reader.keyMatches(name, at: cursor) {
      var valueOffset = cursor
      try reader.skipKey(at: &valueOffset)
      var next = valueOffset
      try reader.skip(at: &next, codingPath)
      guard next <= end else { throw reader.fail("entry runs past its container", codingPath) }
      cursor = next
      cursorIndex += 1
      lastFound = (name, valueOffset)
      return valueOffset
    }
    let found = try buildIndex()[name]
    if let found { lastFound = (name, found) }
    return found
  }

  private func buildIndex() throws -> [String: Int] {
    if let index { return index }
    var built: [String: Int] = [:]
    var offset = first
    for _ in 0..<count {
      let key = try reader.rawString(at: &offset, codingPath)
      built[key] = offset
      try reader.skip(at: &offset, codingPath)
      guard offset <= end else { throw reader.fail("entry runs past its container", codingPath) }
    }
    index = built
    return built
  }

  private func require(_ key: Key) throws -> Int {
    guard let offset = try find(key) else {
      throw reader.fail("no value for key '\(key.stringValue)'", codingPath)
    }
    return offset
  }

  var allKeys: [Key] {
    guard let index = try? buildIndex() else { return [] }
    return index.keys.compactMap { Key(stringValue: $0) }
  }

  func contains(_ key: Key) -> Bool { (try? find(key)) != nil }

  func decodeNil(forKey key: Key) throws -> Bool {
    reader.peekTag(at: try require(key)) == .null
  }

  func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
    var offset = try require(key)
    return try reader.decodeValue(T.self, at: &offset, path: codingPath + [key])
  }

  func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
    guard var offset = try find(key), reader.peekTag(at: offset) != .null else { return nil }
    return try reader.decodeValue(T.self, at: &offset, path: codingPath + [key])
  }

  func nestedContainer<NestedKey: CodingKey>(
    keyedBy type: NestedKey.Type, forKey key: Key
  ) throws -> KeyedDecodingContainer<NestedKey> {
    KeyedDecodingContainer(
      try KeyedReader<NestedKey>(reader: reader, offset: try require(key), codingPath: codingPath + [key]))
  }

  func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
    try UnkeyedReader(reader: reader, offset: try require(key), codingPath: codingPath + [key])
  }

  func superDecoder() throws -> any Decoder {
    // "super" need not be one of `Key`'s cases.
    guard let offset = try find(name: "super") else { throw reader.fail("no value for key 'super'", codingPath) }
    return ValueDecoder(reader: reader, offset: offset, codingPath: codingPath)
  }

  func superDecoder(forKey key: Key) throws -> any Decoder {
    ValueDecoder(reader: reader, offset: try require(key), codingPath: codingPath + [key])
  }
}

/// Reads an unkeyed container in order.
struct UnkeyedReader: UnkeyedDecodingContainer {
  let reader: ByteReader
  let codingPath: [any CodingKey]
  let count: Int?
  private(set) var currentIndex = 0
  private var cursor: Int
  private let end: Int

  init(reader: ByteReader, offset: Int, codingPath: [any CodingKey]) throws {
    self.reader = reader
    self.codingPath = codingPath
    let (count, first, end) = try reader.container(.unkeyed, at: offset, codingPath)
    self.count = count
    self.cursor = first
    self.end = end
  }

  var isAtEnd: Bool { currentIndex >= count! }

  private var elementPath: [any CodingKey] { codingPath + [IndexKey(currentIndex)] }

  private func checkNotAtEnd() throws {
    if isAtEnd { throw reader.fail("no more elements (count \(count!))", codingPath) }
  }

  mutating func decodeNil() throws -> Bool {
    try checkNotAtEnd()
    guard reader.peekTag(at: cursor) == .null else { return false }
    cursor += 1
    currentIndex += 1
    return true
  }

  mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
    try checkNotAtEnd()
    let value = try reader.decodeValue(T.self, at: &cursor, path: elementPath)
    guard cursor <= end else { throw reader.fail("element runs past its container", codingPath) }
    currentIndex += 1
    return value
  }

  private mutating func advance() throws -> Int {
    try checkNotAtEnd()
    let start = cursor
    try reader.skip(at: &cursor, elementPath)
    guard cursor <= end else { throw reader.fail("element runs past its container", codingPath) }
    currentIndex += 1
    return start
  }

  mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<
    NestedKey
  > {
    let path = elementPath
    return KeyedDecodingContainer(try KeyedReader<NestedKey>(reader: reader, offset: try advance(), codingPath: path))
  }

  mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
    let path = elementPath
    return try UnkeyedReader(reader: reader, offset: try advance(), codingPath: path)
  }

  mutating func superDecoder() throws -> any Decoder {
    let path = elementPath
    return ValueDecoder(reader: reader, offset: try advance(), codingPath: path)
  }
}

/// Reads the one value at its position.
struct SingleValueReader: SingleValueDecodingContainer {
  let reader: ByteReader
  let offset: Int
  let codingPath: [any CodingKey]

  func decodeNil() -> Bool { reader.peekTag(at: offset) == .null }

  func decode<T: Decodable>(_ type: T.Type) throws -> T {
    var cursor = offset
    return try reader.decodeValue(T.self, at: &cursor, path: codingPath)
  }
}
