/// The keyed container: each entry is a key string and a value, appended in call order.
struct KeyedWriter<Key: CodingKey>: KeyedEncodingContainerProtocol {
  let writer: ByteWriter
  let codingPath: [any CodingKey]
  let token: Int
  let countOffset: Int

  /// Starts an entry: checks order, counts it, writes the key.
  private func begin(_ key: Key) throws { try begin(name: key.stringValue) }

  private func begin(name: String) throws {
    try writer.activate(token, path: codingPath)
    writer.incrementCount(at: countOffset)
    writer.key(name)
  }

  mutating func encodeNil(forKey key: Key) throws {
    try begin(key)
    writer.tag(.null)
  }

  mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
    try begin(key)
    try writer.encodeValue(value, path: codingPath + [key])
  }

  mutating func nestedContainer<NestedKey: CodingKey>(
    keyedBy keyType: NestedKey.Type, forKey key: Key
  ) -> KeyedEncodingContainer<NestedKey> {
    // Protocol requirement cannot throw: an out-of-order use is caught when the nested one writes.
    try? begin(key)
    let opened = writer.openContainer(.keyed)
    return KeyedEncodingContainer(
      KeyedWriter<NestedKey>(
        writer: writer, codingPath: codingPath + [key], token: opened.token, countOffset: opened.countOffset))
  }

  mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
    try? begin(key)
    let opened = writer.openContainer(.unkeyed)
    return UnkeyedWriter(
      writer: writer, codingPath: codingPath + [key], token: opened.token, countOffset: opened.countOffset)
  }

  mutating func superEncoder() -> any Encoder {
    // "super" need not be one of `Key`'s cases.
    if (try? begin(name: "super")) != nil { writer.expectSuperValue() }
    return ValueEncoder(writer: writer, codingPath: codingPath + [SuperKey()])
  }

  mutating func superEncoder(forKey key: Key) -> any Encoder {
    // The entry's value is whatever the returned encoder writes; if it writes nothing, an
    // empty keyed container is written in its place before the next entry or the end.
    if (try? begin(key)) != nil { writer.expectSuperValue() }
    return ValueEncoder(writer: writer, codingPath: codingPath + [key])
  }
}

/// The unkeyed container: a count and the values in order.
struct UnkeyedWriter: UnkeyedEncodingContainer {
  let writer: ByteWriter
  let codingPath: [any CodingKey]
  let token: Int
  let countOffset: Int
  private(set) var count = 0

  init(writer: ByteWriter, codingPath: [any CodingKey], token: Int, countOffset: Int) {
    self.writer = writer
    self.codingPath = codingPath
    self.token = token
    self.countOffset = countOffset
  }

  private mutating func begin() throws {
    try writer.activate(token, path: codingPath)
    writer.incrementCount(at: countOffset)
    count += 1
  }

  private var elementPath: [any CodingKey] { codingPath + [IndexKey(count)] }

  mutating func encodeNil() throws {
    try begin()
    writer.tag(.null)
  }

  mutating func encode<T: Encodable>(_ value: T) throws {
    let path = elementPath
    try begin()
    try writer.encodeValue(value, path: path)
  }

  mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<
    NestedKey
  > {
    let path = elementPath
    try? begin()
    let opened = writer.openContainer(.keyed)
    return KeyedEncodingContainer(
      KeyedWriter<NestedKey>(writer: writer, codingPath: path, token: opened.token, countOffset: opened.countOffset))
  }

  mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
    let path = elementPath
    try? begin()
    let opened = writer.openContainer(.unkeyed)
    return UnkeyedWriter(writer: writer, codingPath: path, token: opened.token, countOffset: opened.countOffset)
  }

  mutating func superEncoder() -> any Encoder {
    let path = elementPath
    if (try? begin()) != nil { writer.expectSuperValue() }
    return ValueEncoder(writer: writer, codingPath: path)
  }
}

/// The single-value container: writes exactly one value in place.
struct SingleValueWriter: SingleValueEncodingContainer {
  let writer: ByteWriter
  let codingPath: [any CodingKey]

  mutating func encodeNil() throws { writer.tag(.null) }

  mutating func encode<T: Encodable>(_ value: T) throws {
    try writer.encodeValue(value, path: codingPath)
  }
}

/// The coding key of the entry `superEncoder()` writes.
struct SuperKey: CodingKey {
  var stringValue: String { "super" }
  var intValue: Int? { nil }
  init() {}
  init?(stringValue: String) { guard stringValue == "super" else { return nil } }
  init?(intValue: Int) { nil }
}

/// A coding key for an array position.
struct IndexKey: CodingKey {
  let intValue: Int?
  var stringValue: String { "\(intValue ?? 0)" }
  init(_ index: Int) { intValue = index }
  init?(stringValue: String) {
    guard let value = Int(stringValue) else { return nil }
    intValue = value
  }
  init?(intValue: Int) { self.intValue = intValue }
}
