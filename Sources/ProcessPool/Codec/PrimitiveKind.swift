/// The types the codec reads and writes without going through `Codable`'s containers, found by
/// comparing metatypes (a dynamic cast would cost more than the value).
enum PrimitiveKind {
  case int, string, double, bool, bytes, ints, doubles, float
  case int64, int32, int16, int8, uint, uint64, uint32, uint16, uint8

  init?(_ type: Any.Type) {
    // The common ones first: this runs for every value, each field of a struct included.
    if type == Int.self {
      self = .int
    } else if type == String.self {
      self = .string
    } else if type == Double.self {
      self = .double
    } else if type == Bool.self {
      self = .bool
    } else if type == [UInt8].self {
      self = .bytes
    } else if type == [Int].self {
      self = .ints
    } else if type == [Double].self {
      self = .doubles
    } else if type == Float.self {
      self = .float
    } else if type == Int64.self {
      self = .int64
    } else if type == Int32.self {
      self = .int32
    } else if type == Int16.self {
      self = .int16
    } else if type == Int8.self {
      self = .int8
    } else if type == UInt.self {
      self = .uint
    } else if type == UInt64.self {
      self = .uint64
    } else if type == UInt32.self {
      self = .uint32
    } else if type == UInt16.self {
      self = .uint16
    } else if type == UInt8.self {
      self = .uint8
    } else {
      return nil
    }
  }
}
