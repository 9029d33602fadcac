import Foundation
import Testing
@testable import ShimKit

@Suite struct JSONCodec {
    /// What QEMU sends is parsed and written back byte for byte (compact form).
    @Test(arguments: [
        #"{"return":{"status":"running","singlestep":false,"running":true},"id":"x"}"#,
        #"{"a":[1,-2,3.5,null,true,false,"s"],"b":{}}"#,
        #"{"size":18446744073709551615,"neg":-9223372036854775808}"#,
        #"{"text":"quote \" backslash \\ newline \n tab \t ctl \u0001 é 😀"}"#,
        #"[]"#,
    ])
    func roundTrips(text: String) throws {
        #expect(try JSONValue.parse(text).description == text)
    }

    @Test func keepsMemberOrder() throws {
        let value = try JSONValue.parse(#"{"z":1,"a":2,"m":3}"#)
        guard case .object(let object) = value else { Issue.record("not an object"); return }
        #expect(object.keys == ["z", "a", "m"])
    }

    @Test func numbersKeepTheirKind() throws {
        #expect(try JSONValue.parse("42") == .int(42))
        #expect(try JSONValue.parse("18446744073709551615") == .uint(UInt64.max))
        #expect(try JSONValue.parse("1.5") == .double(1.5))
        #expect(try JSONValue.parse("1e3") == .double(1000))
    }

    @Test func unicodeEscapesAndSurrogates() throws {
        #expect(try JSONValue.parse(#""\u00e9\ud83d\ude00""#) == .string("é😀"))
        #expect(throws: (any Error).self) { try JSONValue.parse(#""\ud83d""#) }
    }

    @Test(arguments: ["", "{", "[1,]", #"{"a" 1}"#, "01", "nul", #""unterminated"#, "{} x", "\"\u{1}\""])
    func rejectsMalformed(text: String) {
        #expect(throws: (any Error).self) { try JSONValue.parse(text) }
    }

    @Test func rejectsAbsurdNesting() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: (any Error).self) { try JSONValue.parse(deep) }
    }

    @Test func controlCharactersAreEscapedOnOutput() {
        #expect(JSONValue.string("a\u{0}b\u{1f}").description == #""a\u0000b\u001f""#)
    }
}
