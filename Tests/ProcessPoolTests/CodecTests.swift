import Testing

@testable import ProcessPool

/// The binary codec on its own: round trips of everything `Codable` can express, and malformed
/// input that must throw (never crash, hang or allocate absurdly).
@Suite struct CodecTests {
  func roundTrip<T: Codable & Equatable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let bytes = try BinaryEncoder.encode(value)
    let back = try BinaryDecoder.decode(T.self, from: bytes)
    #expect(back == value, sourceLocation: sourceLocation)
  }

  @Test func integersAtTheirBounds() throws {
    for value in [Int.min, -1, 0, 1, 127, 128, Int.max] { try roundTrip(value) }
    try roundTrip([Int8.min, Int8.max])
    try roundTrip([Int16.min, Int16.max])
    try roundTrip([Int32.min, Int32.max])
    try roundTrip([Int64.min, Int64.max])
    try roundTrip([UInt.max, 0])
    try roundTrip([UInt8.max, 0])
    try roundTrip([UInt16.max, 0])
    try roundTrip([UInt32.max, 0])
    try roundTrip([UInt64.max, 0])
  }

  /// A block of one `Int` takes direct paths both ways (a map's items and outputs): the same bytes
  /// as the general path, and anything but the plain form left to it.
  @Test func intBlocksTakeTheirDirectPathWithTheSameBytesAndChecks() throws {
    let reader = ByteReader(UnsafeRawBufferPointer(start: nil, count: 0))
    let values = [
      Int.min, Int.min + 1, -(1 << 62), -65, -64, -1, 0, 1, 63, 64, 1 << 55, (1 << 56) - 1, 1 << 62, Int.max,
    ]
    for value in values {
      var direct: [UInt8] = []
      try direct.withByteWriter { try $0.appendBlock(value) }
      var general: [UInt8] = []
      try general.withByteWriter { try $0.appendValueBlock(value) }
      #expect(direct == general)
      let back = try direct.withUnsafeBytes {
        try BinaryDecoder.decode(Int.self, from: UnsafeRawBufferPointer(rebasing: $0[4...]), reusing: reader)
      }
      #expect(back == value)
    }
    // Not the plain form: the general path decodes it (an unsigned tag) or says what is wrong.
    let unsigned = try BinaryEncoder.encode(UInt(7))
    #expect(try unsigned.withUnsafeBytes { try BinaryDecoder.decode(Int.self, from: $0, reusing: reader) } == 7)
    let trailing = try BinaryEncoder.encode(5) + [0]
    #expect(throws: CodecError.self) {
      try trailing.withUnsafeBytes { try BinaryDecoder.decode(Int.self, from: $0, reusing: reader) }
    }
    let cut: [UInt8] = [CodecTag.signed.rawValue, 0x80]
    #expect(throws: CodecError.self) {
      try cut.withUnsafeBytes { try BinaryDecoder.decode(Int.self, from: $0, reusing: reader) }
    }
    // Past the writer's limit: refused and nothing left behind.
    var limited: [UInt8] = [1, 2]
    let refused = limited.withByteWriter { writer -> Bool in
      writer.byteLimit = 6
      return (try? writer.appendBlock(Int.max)) == nil
    }
    #expect(refused && limited == [1, 2])
  }

  @Test func floats() throws {
    for value in [0.0, -0.0, 1.5, .infinity, -.infinity, .leastNonzeroMagnitude, .greatestFiniteMagnitude] {
      try roundTrip(value)
    }
    let nan = try BinaryDecoder.decode(Double.self, from: try BinaryEncoder.encode(Double.nan))
    #expect(nan.isNaN)
    let negativeZero = try BinaryDecoder.decode(Double.self, from: try BinaryEncoder.encode(-0.0))
    #expect(negativeZero.sign == .minus)
    try roundTrip(Float(3.25))
    try roundTrip([Float.infinity, -1])
  }

  @Test func stringsAndBools() throws {
    for value in ["", "hello", "héllo wörld ✓ 🎉", String(repeating: "x", count: 100_000)] { try roundTrip(value) }
    try roundTrip([true, false])
  }

  @Test func arrays() throws {
    try roundTrip([UInt8]())
    try roundTrip([Int]())
    try roundTrip([1.5, -2.5])
    try roundTrip(["a", "", "c"])
    try roundTrip([[1, 2], [], [3]])
    let big = [UInt8](repeating: 0xAB, count: 10 << 20)
    let back = try BinaryDecoder.decode([UInt8].self, from: try BinaryEncoder.encode(big))
    let same = back == big
    #expect(same)
  }

  struct Point: Codable, Equatable {
    var x: Int
    var y: Double
    var label: String?
    var tags: [String]
  }

  enum Shape: Codable, Equatable {
    case circle(center: Point, radius: Double)
    case polygon([Point])
    case empty
  }

  struct Empty: Codable, Equatable {}

  @Test func structsEnumsOptionalsAndDictionaries() throws {
    let point = Point(x: 3, y: -1.5, label: nil, tags: ["a"])
    try roundTrip(point)
    try roundTrip(Point(x: 0, y: 0, label: "origin", tags: []))
    try roundTrip(Shape.circle(center: point, radius: 2))
    try roundTrip(Shape.polygon([point, point]))
    try roundTrip(Shape.empty)
    try roundTrip(Empty())
    try roundTrip([Empty(), Empty()])
    // Nested optionals: like JSON, `.some(nil)` and `nil` are the same on the wire.
    for nested: Int?? in [.some(.some(5)), .none] {
      let back = try BinaryDecoder.decode(Int??.self, from: try BinaryEncoder.encode(nested))
      #expect(back == nested)
    }
    try roundTrip([Int?.none, 5])
    try roundTrip(["a": 1, "b": 2])
    try roundTrip([1: "one", 2: "two"])
    try roundTrip(["k": [Point(x: 1, y: 2, label: "p", tags: [])]])
  }

  /// Writes its keys in one order and reads them in another, and skips one.
  struct Reordered: Codable, Equatable {
    var a: Int
    var b: String
    var c: [Int]
    enum CodingKeys: String, CodingKey { case a, b, c, extra }
    init(a: Int, b: String, c: [Int]) {
      self.a = a
      self.b = b
      self.c = c
    }
    init(from decoder: any Decoder) throws {
      let container = try decoder.container(keyedBy: CodingKeys.self)
      c = try container.decode([Int].self, forKey: .c)
      a = try container.decode(Int.self, forKey: .a)
      b = try container.decode(String.self, forKey: .b)
      #expect(container.contains(.extra))
      #expect(Set(container.allKeys.map(\.stringValue)) == ["a", "b", "c", "extra"])
    }
    func encode(to encoder: any Encoder) throws {
      var container = encoder.container(keyedBy: CodingKeys.self)
      try container.encode(a, forKey: .a)
      try container.encode("ignored", forKey: .extra)
      try container.encode(b, forKey: .b)
      try container.encode(c, forKey: .c)
    }
  }

  @Test func keysInAnyOrder() throws {
    try roundTrip(Reordered(a: 1, b: "two", c: [3]))
  }

  class Animal: Codable {
    var name: String
    init(name: String) { self.name = name }
  }

  final class Dog: Animal, Equatable {
    var good: Bool
    init(name: String, good: Bool) {
      self.good = good
      super.init(name: name)
    }
    enum CodingKeys: String, CodingKey { case good }
    required init(from decoder: any Decoder) throws {
      let container = try decoder.container(keyedBy: CodingKeys.self)
      good = try container.decode(Bool.self, forKey: .good)
      try super.init(from: container.superDecoder())
    }
    override func encode(to encoder: any Encoder) throws {
      var container = encoder.container(keyedBy: CodingKeys.self)
      try container.encode(good, forKey: .good)
      try super.encode(to: container.superEncoder())
    }
    static func == (lhs: Dog, rhs: Dog) -> Bool { lhs.name == rhs.name && lhs.good == rhs.good }
  }

  @Test func classesWithSuperEncoder() throws {
    try roundTrip(Dog(name: "Rex", good: true))
  }

  /// Asks for a super encoder for a key, one for "super" and one in an unkeyed container, uses
  /// none of them, and writes more entries after each.
  struct UnusedSuperEncoders: Codable, Equatable {
    var before: Int
    var after: String
    var element: Int
    enum CodingKeys: String, CodingKey { case before, base, after, list }
    init(before: Int, after: String, element: Int) {
      self.before = before
      self.after = after
      self.element = element
    }
    init(from decoder: any Decoder) throws {
      let container = try decoder.container(keyedBy: CodingKeys.self)
      before = try container.decode(Int.self, forKey: .before)
      // The unused entries decode as empty keyed containers.
      let base = try container.superDecoder(forKey: .base).container(keyedBy: CodingKeys.self)
      #expect(base.allKeys.isEmpty)
      #expect(try container.superDecoder().container(keyedBy: CodingKeys.self).allKeys.isEmpty)
      after = try container.decode(String.self, forKey: .after)
      var list = try container.nestedUnkeyedContainer(forKey: .list)
      #expect(list.count == 2)
      _ = try list.superDecoder()
      element = try list.decode(Int.self)
    }
    func encode(to encoder: any Encoder) throws {
      var container = encoder.container(keyedBy: CodingKeys.self)
      try container.encode(before, forKey: .before)
      _ = container.superEncoder(forKey: .base)
      _ = container.superEncoder()
      try container.encode(after, forKey: .after)
      var list = container.nestedUnkeyedContainer(forKey: .list)
      _ = list.superEncoder()
      try list.encode(element)
    }
  }

  /// Unused, last in their containers: the value is written when the container closes.
  struct UnusedSuperEncoderLast: Codable, Equatable {
    var value: Int
    enum CodingKeys: String, CodingKey { case value, base }
    init(value: Int) { self.value = value }
    init(from decoder: any Decoder) throws {
      let container = try decoder.container(keyedBy: CodingKeys.self)
      value = try container.decode(Int.self, forKey: .value)
      // A type that expects a value there gets a typed error, not garbage.
      #expect(throws: CodecError.self) { try Int(from: container.superDecoder(forKey: .base)) }
    }
    func encode(to encoder: any Encoder) throws {
      var container = encoder.container(keyedBy: CodingKeys.self)
      try container.encode(value, forKey: .value)
      _ = container.superEncoder(forKey: .base)
    }
  }

  @Test func anUnusedSuperEncoderLeavesAnEmptyValueNotAKeyWithoutOne() throws {
    try roundTrip(UnusedSuperEncoders(before: 1, after: "two", element: 3))
    try roundTrip(UnusedSuperEncoderLast(value: 4))
    try roundTrip([UnusedSuperEncoderLast(value: 5), UnusedSuperEncoderLast(value: 6)])
  }

  @Test func everyTruncationThrows() throws {
    let bytes = try BinaryEncoder.encode(
      Shape.polygon([Point(x: 1, y: 2, label: "l", tags: ["t", "u"]), Point(x: -3, y: 4, label: nil, tags: [])]))
    for length in 0..<bytes.count {
      #expect(throws: CodecError.self) { try BinaryDecoder.decode(Shape.self, from: Array(bytes[0..<length])) }
    }
  }

  @Test func malformedInputThrows() throws {
    // A huge declared length.
    #expect(throws: CodecError.self) {
      try BinaryDecoder.decode([UInt8].self, from: [CodecTag.bytes.rawValue, 0xff, 0xff, 0xff, 0xff, 0x0f])
    }
    #expect(throws: CodecError.self) {
      try BinaryDecoder.decode([Int].self, from: [CodecTag.ints.rawValue, 0xff, 0xff, 0xff, 0x7f])
    }
    // Out of range for the type.
    #expect(throws: CodecError.self) { try BinaryDecoder.decode(UInt8.self, from: try BinaryEncoder.encode(300)) }
    #expect(throws: CodecError.self) { try BinaryDecoder.decode(UInt.self, from: try BinaryEncoder.encode(-1)) }
    // Trailing bytes.
    #expect(throws: CodecError.self) { try BinaryDecoder.decode(Int.self, from: try BinaryEncoder.encode(1) + [0]) }
    // Type mismatch and unknown tags.
    #expect(throws: CodecError.self) { try BinaryDecoder.decode(String.self, from: try BinaryEncoder.encode(1)) }
    #expect(throws: CodecError.self) { try BinaryDecoder.decode(Int.self, from: [200]) }
    #expect(throws: CodecError.self) { try BinaryDecoder.decode(Point.self, from: try BinaryEncoder.encode([1, 2])) }
    // Invalid UTF-8.
    #expect(throws: CodecError.self) {
      try BinaryDecoder.decode(String.self, from: [CodecTag.string.rawValue, 2, 0xc3, 0x28])
    }
    // A missing key.
    #expect(throws: CodecError.self) { try BinaryDecoder.decode(Point.self, from: try BinaryEncoder.encode(Empty())) }
  }
}
