import CLibxml2

/// Validates domain XML against libvirt's RelaxNG schema through libxml2.
///
/// Used by `vmshim validate` only: loading domain.rng costs ~10 ms and ~4 MiB,
/// which a running shim should not pay.
public enum SchemaValidator {
    public static let defaultSchema = "/usr/share/libvirt/schemas/domain.rng"

    public struct Problem: Sendable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    private final class Collector {
        var problems: [Problem] = []
    }

    /// Problems found (empty means valid). Throws when the schema cannot be loaded.
    public static func validate(_ text: String, file: String, schema: String = defaultSchema) throws -> [Problem] {
        guard FileIO.exists(schema) else {
            throw ShimError(.notFound, "libvirt's schema \(schema) is not installed (apt-get install libvirt0)")
        }
        guard let parserContext = xmlRelaxNGNewParserCtxt(schema) else {
            throw ShimError(.internalError, "cannot read the schema \(schema)")
        }
        defer { xmlRelaxNGFreeParserCtxt(parserContext) }
        xmlRelaxNGSetParserStructuredErrors(parserContext, { _, _ in }, nil)
        guard let relaxNG = xmlRelaxNGParse(parserContext) else {
            throw ShimError(.internalError, "cannot parse the schema \(schema)")
        }
        defer { xmlRelaxNGFree(relaxNG) }

        let options = Int32(XML_PARSE_NONET.rawValue | XML_PARSE_NOERROR.rawValue | XML_PARSE_NOWARNING.rawValue)
        let utf8 = Array(text.utf8)
        let document = utf8.withUnsafeBufferPointer { buffer in
            buffer.baseAddress.map { base in
                base.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                    xmlReadMemory($0, Int32(buffer.count), file, "UTF-8", options)
                }
            } ?? nil
        }
        guard let document else {
            // Not well-formed: the domain parser reports it with its line.
            _ = try XMLTree.parse(text, file: file)
            throw ShimError(.invalidArgument, "\(file): XML is not well-formed")
        }
        defer { xmlFreeDoc(document) }
        // vmshim's own extension, unknown to libvirt's schema: <resource register='none'/>.
        var child = xmlDocGetRootElement(document)?.pointee.children
        while let node = child {
            if node.pointee.type == XML_ELEMENT_NODE, let name = node.pointee.name, String(cString: name) == "resource" {
                xmlUnsetProp(node, "register")
            }
            child = node.pointee.next
        }
        guard let validContext = xmlRelaxNGNewValidCtxt(relaxNG) else {
            throw ShimError(.internalError, "cannot create a RelaxNG validation context")
        }
        defer { xmlRelaxNGFreeValidCtxt(validContext) }
        let collector = Collector()
        let box = Unmanaged.passUnretained(collector).toOpaque()
        xmlRelaxNGSetValidStructuredErrors(
            validContext,
            { context, error in
                guard let context, let error else { return }
                let collector = Unmanaged<Collector>.fromOpaque(context).takeUnretainedValue()
                let message = error.pointee.message.map { String(cString: $0) } ?? "invalid"
                collector.problems.append(Problem(line: Int(error.pointee.line), message: message.trimmingTrailingNewlines()))
            }, box)
        let result = withExtendedLifetime(collector) { xmlRelaxNGValidateDoc(validContext, document) }
        if result != 0, collector.problems.isEmpty {
            collector.problems.append(Problem(line: 0, message: "does not match libvirt's domain schema"))
        }
        return collector.problems
    }
}
