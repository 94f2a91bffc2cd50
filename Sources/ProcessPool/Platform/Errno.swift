#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// An `errno` value kept from the failing call, with the name of that call.
struct Errno: Error, CustomStringConvertible {
  let code: Int32
  let call: String

  var description: String {
    guard let text = strerror(code) else { return "\(call): errno \(code)" }
    return "\(call): \(String(cString: text)) (errno \(code))"
  }
}
