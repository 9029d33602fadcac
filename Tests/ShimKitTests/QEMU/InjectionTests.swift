import Foundation
import Testing
@testable import ShimKit

/// Splits a QemuOpts value ("a=b,c=d,,e") the way QEMU does: a single comma
/// separates options, a doubled comma is a literal comma.
func parseQemuOpts(_ text: String) -> [(key: String, value: String)] {
    var options: [String] = []
    var current = ""
    var characters = Array(text)[...]
    while let character = characters.popFirst() {
        if character == "," {
            if characters.first == "," {
                characters.removeFirst()
                current.append(",")
            } else {
                options.append(current)
                current = ""
            }
        } else {
            current.append(character)
        }
    }
    options.append(current)
    return options.map { option in
        guard let equals = option.firstIndex(of: "=") else { return (option, "") }
        return (String(option[..<equals]), String(option[option.index(after: equals)...]))
    }
}

@Suite struct ArgvInjection {
    let arguments: [String]

    init() throws {
        let xml = try Fixtures.read(Fixtures.sourceDirectory + "/domains/comma-paths.xml")
        arguments = try Fixtures.plan(xml, file: "comma-paths.xml").arguments
    }

    func values(of option: String) -> [String] {
        arguments.indices.dropLast().filter { arguments[$0] == option }.map { arguments[$0 + 1] }
    }

    @Test func qemuOptsParserSplitsLikeQEMU() {
        let parsed = parseQemuOpts("socket,id=x,path=/a,,b=c,server=on")
        #expect(parsed.map(\.key) == ["socket", "id", "path", "server"])
        #expect(parsed[2].value == "/a,b=c")
    }

    @Test func chardevPathsStayOneValue() throws {
        let chardevs = values(of: "-chardev").map(parseQemuOpts)
        let serial1 = try #require(chardevs.first { $0.contains { $0 == ("id", "charserial1") } })
        #expect(serial1.map(\.key) == ["socket", "id", "path"])
        #expect(serial1.first { $0.key == "path" }?.value == "/tmp/sock,server=on")
        for chardev in chardevs {
            let keys = chardev.map(\.key)
            #expect(Set(keys).count == keys.count, "duplicate key in -chardev \(chardev)")
        }
    }

    @Test func vncSocketStaysOneValue() throws {
        let vnc = try #require(values(of: "-vnc").first.map(parseQemuOpts))
        #expect(vnc.map(\.key) == ["vnc", "audiodev"])
        #expect(vnc[0].value == "unix:/tmp/vnc,password=on.sock")
    }

    /// JSON options carry user text as JSON strings: the parsed value is the
    /// exact path and no other key appears.
    @Test func blockdevFilenameIsAJSONString() throws {
        let blockdevs = try values(of: "-blockdev").map { try JSONValue.parse($0) }
        let storage = try #require(blockdevs.first { $0["driver"]?.stringValue == "file" })
        #expect(storage["filename"]?.stringValue == "/tmp/a,file=/etc/shadow.img")
        guard case .object(let object) = storage else { return }
        #expect(Set(object.keys) == ["driver", "filename", "node-name", "auto-read-only", "discard"])
    }

    /// -kernel, -initrd and -append are not QemuOpts: QEMU takes the value
    /// verbatim, so it must not be escaped (a doubled comma would change the
    /// path). The integration suite proves QEMU opens the literal file.
    @Test func kernelOptionsAreVerbatim() {
        #expect(values(of: "-kernel") == ["/tmp/a,file=/etc/shadow"])
        #expect(values(of: "-initrd") == ["/tmp/i,readonly=off"])
        #expect(values(of: "-append") == ["root=/dev/vda,file=/etc/shadow"])
    }

    /// Every non-JSON option with user text parses back to distinct keys.
    @Test func noOptionGainsKeys() {
        for option in ["-name", "-machine", "-chardev", "-vnc", "-add-fd", "-rtc", "-smp", "-boot"] {
            for value in values(of: option) {
                let keys = parseQemuOpts(value).map(\.key)
                #expect(Set(keys).count == keys.count, "\(option) \(value)")
                // Only the first, positional word may lack "=" (e.g. the chardev backend).
                let assigned = parseQemuOpts(value).dropFirst().map(\.key)
                #expect(!assigned.contains { ["file", "readonly", "password"].contains($0) }, "\(option) \(value)")
            }
        }
    }

    @Test func escapingDoublesEveryComma() {
        #expect(QEMUOption.escape("a,b,,c") == "a,,b,,,,c")
        #expect(QEMUOption.escape("plain") == "plain")
    }
}
