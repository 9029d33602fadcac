import CLibxml2

/// A parsed XML element with its source line, read once from libxml2 and then
/// owned by Swift.
///
/// The tree is mutable so the live definition (generated UUID and MACs, pty
/// paths, addresses) can be written back into the user's document without
/// losing anything the user wrote. Every element and attribute carries a
/// "consumed" mark: the domain parser marks what it understood, and whatever is
/// left unmarked is refused by name and line instead of being silently dropped.
public final class XMLElement {
    public let name: String
    /// Namespace URI; nil for libvirt's own (unqualified) elements.
    public let namespaceURI: String?
    /// The prefix the document used for `namespaceURI`, kept for writing.
    public let prefix: String?
    public private(set) var attributes: [(name: String, value: String)]
    public private(set) var children: [XMLElement]
    /// Concatenated text content directly inside this element.
    public var text: String
    public let line: Int
    public private(set) weak var parent: XMLElement?
    /// Namespace declarations on this element (prefix, href), kept for writing.
    var namespaceDeclarations: [(prefix: String?, href: String)] = []

    var consumed = false
    var consumedAttributes: Set<String> = []

    public init(name: String, attributes: [(String, String)] = [], text: String = "", line: Int = 0) {
        self.name = name
        self.namespaceURI = nil
        self.prefix = nil
        self.attributes = attributes.map { (name: $0.0, value: $0.1) }
        self.children = []
        self.text = text
        self.line = line
    }

    init(name: String, namespaceURI: String?, prefix: String?, line: Int) {
        self.name = name
        self.namespaceURI = namespaceURI
        self.prefix = prefix
        self.attributes = []
        self.children = []
        self.text = ""
        self.line = line
    }

    public func attribute(_ name: String) -> String? {
        attributes.first(where: { $0.name == name })?.value
    }

    public func setAttribute(_ name: String, _ value: String) {
        if let index = attributes.firstIndex(where: { $0.name == name }) {
            attributes[index].value = value
        } else {
            attributes.append((name, value))
        }
        consumedAttributes.insert(name)
    }

    public func removeAttribute(_ name: String) {
        attributes.removeAll(where: { $0.name == name })
    }

    public func elements(named name: String) -> [XMLElement] {
        children.filter { $0.name == name && $0.namespaceURI == nil }
    }

    public func firstElement(named name: String) -> XMLElement? {
        children.first(where: { $0.name == name && $0.namespaceURI == nil })
    }

    @discardableResult
    public func appendChild(_ child: XMLElement) -> XMLElement {
        child.parent = self
        child.markConsumedRecursively()
        children.append(child)
        return child
    }

    /// Inserts `child` before the first existing child named `before` (or appends).
    @discardableResult
    public func insertChild(_ child: XMLElement, before names: [String]) -> XMLElement {
        child.parent = self
        child.markConsumedRecursively()
        if let index = children.firstIndex(where: { names.contains($0.name) }) {
            children.insert(child, at: index)
        } else {
            children.append(child)
        }
        return child
    }

    public func removeChild(_ child: XMLElement) {
        children.removeAll(where: { $0 === child })
    }

    /// Returns the child named `name`, creating it (appended) when absent.
    public func child(named name: String) -> XMLElement {
        if let existing = firstElement(named: name) { return existing }
        return appendChild(XMLElement(name: name))
    }

    func markConsumedRecursively() {
        consumed = true
        consumedAttributes = Set(attributes.map(\.name))
        for child in children { child.markConsumedRecursively() }
    }

    /// A readable path such as `/domain/devices/disk[2]/driver`, for messages.
    public var path: String {
        var parts: [String] = []
        var node: XMLElement? = self
        while let current = node {
            var part = current.qualifiedName
            if let parent = current.parent {
                let siblings = parent.children.filter { $0.name == current.name }
                if siblings.count > 1, let index = siblings.firstIndex(where: { $0 === current }) {
                    part += "[\(index + 1)]"
                }
            }
            parts.append(part)
            node = current.parent
        }
        return "/" + parts.reversed().joined(separator: "/")
    }

    var qualifiedName: String {
        if let prefix, !prefix.isEmpty { return "\(prefix):\(name)" }
        return name
    }
}

// MARK: - Parsing with libxml2

public struct XMLSyntaxError: Error, Sendable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let message: String
    public var description: String { "\(file):\(line): \(message)" }
}

public enum XMLTree {
    /// Parses a document. External entities and network access are refused.
    public static func parse(_ text: String, file: String) throws -> XMLElement {
        guard let context = xmlNewParserCtxt() else {
            throw ShimError(.internalError, "\(file): cannot allocate an XML parser")
        }
        defer { xmlFreeParserCtxt(context) }
        let options = Int32(XML_PARSE_NONET.rawValue | XML_PARSE_NOERROR.rawValue | XML_PARSE_NOWARNING.rawValue
            | XML_PARSE_NOCDATA.rawValue)
        let utf8 = Array(text.utf8)
        let document = utf8.withUnsafeBufferPointer { buffer in
            buffer.baseAddress.map { base in
                base.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                    xmlCtxtReadMemory(context, $0, Int32(buffer.count), file, "UTF-8", options)
                }
            } ?? nil
        }
        guard let document else {
            if let error = xmlCtxtGetLastError(context) {
                let message = error.pointee.message.map { String(cString: $0) } ?? "malformed XML"
                throw ShimError(
                    .invalidArgument,
                    "\(file):\(error.pointee.line): XML is not well-formed: "
                        + message.trimmingTrailingNewlines())
            }
            throw ShimError(.invalidArgument, "\(file): XML is not well-formed")
        }
        defer { xmlFreeDoc(document) }
        guard let root = xmlDocGetRootElement(document) else {
            throw ShimError(.invalidArgument, "\(file): the document has no root element")
        }
        return convert(root)
    }

    private static func convert(_ node: xmlNodePtr) -> XMLElement {
        let name = String(cString: node.pointee.name)
        var namespaceURI: String?
        var prefix: String?
        if let ns = node.pointee.ns {
            namespaceURI = ns.pointee.href.map { String(cString: $0) }
            prefix = ns.pointee.prefix.map { String(cString: $0) }
        }
        let element = XMLElement(name: name, namespaceURI: namespaceURI, prefix: prefix, line: Int(xmlGetLineNo(node)))
        var declaration = node.pointee.nsDef
        while let ns = declaration {
            element.namespaceDeclarations.append(
                (ns.pointee.prefix.map { String(cString: $0) }, ns.pointee.href.map { String(cString: $0) } ?? ""))
            declaration = ns.pointee.next
        }
        var attribute = node.pointee.properties
        while let attr = attribute {
            let attrName = String(cString: attr.pointee.name)
            var value = ""
            if let raw = xmlNodeListGetString(node.pointee.doc, attr.pointee.children, 1) {
                value = String(cString: raw)
                cxml_free(raw)
            }
            // Namespaced attributes keep their prefix so they are not mistaken for libvirt's.
            if let ns = attr.pointee.ns, let p = ns.pointee.prefix {
                element.setAttribute("\(String(cString: p)):\(attrName)", value)
            } else {
                element.setAttribute(attrName, value)
            }
            attribute = attr.pointee.next
        }
        element.consumedAttributes = []
        var child = node.pointee.children
        var text = ""
        while let current = child {
            switch current.pointee.type {
            case XML_ELEMENT_NODE:
                let converted = convert(current)
                element.appendChildRaw(converted)
            case XML_TEXT_NODE, XML_CDATA_SECTION_NODE:
                if let content = current.pointee.content { text += String(cString: content) }
            default:
                break  // comments and processing instructions carry no configuration
            }
            child = current.pointee.next
        }
        element.text = text
        return element
    }
}

extension XMLElement {
    fileprivate func appendChildRaw(_ child: XMLElement) {
        child.parent = self
        children.append(child)
    }
}

// MARK: - Writing

extension XMLElement {
    /// Serialises the element with two-space indentation, libvirt style.
    public func xmlString() -> String {
        var out = ""
        write(to: &out, indent: 0)
        return out
    }

    private func write(to out: inout String, indent: Int) {
        let pad = String(repeating: "  ", count: indent)
        out += pad + "<" + qualifiedName
        for declaration in namespaceDeclarations {
            let attrName = declaration.prefix.map { "xmlns:\($0)" } ?? "xmlns"
            out += " \(attrName)='\(XMLElement.escape(declaration.href, quote: true))'"
        }
        for attribute in attributes {
            out += " \(attribute.name)='\(XMLElement.escape(attribute.value, quote: true))'"
        }
        let trimmed = text.trimmingWhitespace()
        if children.isEmpty {
            if trimmed.isEmpty {
                out += "/>\n"
            } else {
                out += ">" + XMLElement.escape(text, quote: false) + "</" + qualifiedName + ">\n"
            }
            return
        }
        out += ">\n"
        for child in children { child.write(to: &out, indent: indent + 1) }
        out += pad + "</" + qualifiedName + ">\n"
    }

    static func escape(_ s: String, quote: Bool) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "'" where quote: out += "&apos;"
            case "\"" where quote: out += "&quot;"
            case "\n" where quote: out += "&#10;"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        guard let end = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(scalars[start...end])
    }

    func trimmingTrailingNewlines() -> String {
        var s = self
        while s.last == "\n" || s.last == "\r" { s.removeLast() }
        return s
    }
}
