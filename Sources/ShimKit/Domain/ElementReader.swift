/// Reading helpers that mark what the parser understood and build errors that
/// name the file, line, element and attribute.
struct ElementReader {
    let file: String

    // MARK: errors

    func error(_ element: XMLElement, _ message: String, code: ShimError.Code = .invalidArgument) -> ShimError {
        ShimError(code, "\(file):\(element.line): <\(element.qualifiedName)> (\(element.path)): \(message)")
    }

    func unsupported(_ element: XMLElement, _ message: String) -> ShimError {
        error(element, message + " (vmshim does not support this yet; remove it or see 'Refused today' in vmshim's README)", code: .unsupported)
    }

    // MARK: attributes

    /// Returns an attribute and marks it understood.
    func attribute(_ element: XMLElement, _ name: String) -> String? {
        guard let value = element.attribute(name) else { return nil }
        element.consumedAttributes.insert(name)
        return value
    }

    func requiredAttribute(_ element: XMLElement, _ name: String) throws -> String {
        guard let value = attribute(element, name) else {
            throw error(element, "missing attribute '\(name)'")
        }
        return value
    }

    /// Marks attributes as understood without using them (output-only or no-op ones).
    func ignoreAttributes(_ element: XMLElement, _ names: String...) {
        for name in names where element.attribute(name) != nil { element.consumedAttributes.insert(name) }
    }

    func enumAttribute<T: RawRepresentable>(_ element: XMLElement, _ name: String, _: T.Type) throws -> T?
    where T.RawValue == String {
        guard let raw = attribute(element, name) else { return nil }
        guard let value = T(rawValue: raw) else {
            throw error(element, "attribute \(name)='\(raw)' is not a value vmshim knows")
        }
        return value
    }

    /// libvirt's yes/no and on/off tri-states.
    func boolAttribute(_ element: XMLElement, _ name: String) throws -> Bool? {
        guard let raw = attribute(element, name) else { return nil }
        switch raw {
        case "yes", "on": return true
        case "no", "off": return false
        default: throw error(element, "attribute \(name)='\(raw)' must be yes/no or on/off")
        }
    }

    func intAttribute(_ element: XMLElement, _ name: String, range: ClosedRange<Int>? = nil) throws -> Int? {
        guard let raw = attribute(element, name) else { return nil }
        guard let value = ElementReader.parseInteger(raw) else {
            throw error(element, "attribute \(name)='\(raw)' is not an integer")
        }
        if let range, !range.contains(value) {
            throw error(element, "attribute \(name)='\(raw)' must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return value
    }

    /// Decimal, or hexadecimal with a 0x prefix, as libvirt accepts for addresses.
    static func parseInteger(_ text: String) -> Int? {
        let trimmed = text.trimmingWhitespace()
        if trimmed.hasPrefix("0x") || trimmed.hasPrefix("0X") { return Int(trimmed.dropFirst(2), radix: 16) }
        return Int(trimmed)
    }

    // MARK: children

    /// The only child named `name`, marked understood; an error when repeated.
    func child(_ element: XMLElement, _ name: String) throws -> XMLElement? {
        let matches = element.elements(named: name)
        guard let first = matches.first else { return nil }
        if matches.count > 1 {
            throw error(matches[1], "<\(name)> may appear only once inside <\(element.name)>")
        }
        first.consumed = true
        return first
    }

    func children(_ element: XMLElement, _ name: String) -> [XMLElement] {
        let matches = element.elements(named: name)
        for match in matches { match.consumed = true }
        return matches
    }

    /// Text content of a child element, trimmed; marks the child understood.
    func childText(_ element: XMLElement, _ name: String) throws -> String? {
        guard let node = try child(element, name) else { return nil }
        return node.text.trimmingWhitespace()
    }

    /// Marks a whole subtree as understood (metadata, descriptions, output-only data).
    func ignoreSubtree(_ element: XMLElement) {
        element.markConsumedRecursively()
    }

    // MARK: final check

    /// Everything the parser did not mark: refused by name and line, all at once.
    func leftovers(in root: XMLElement) -> [String] {
        var problems: [String] = []
        func visit(_ element: XMLElement, parentConsumed: Bool) {
            guard element.consumed else {
                if parentConsumed {
                    problems.append(
                        "\(file):\(element.line): element <\(element.qualifiedName)> (\(element.path)) is not supported by vmshim")
                }
                return
            }
            for attribute in element.attributes where !element.consumedAttributes.contains(attribute.name) {
                problems.append(
                    "\(file):\(element.line): attribute \(attribute.name)='\(attribute.value)' of <\(element.qualifiedName)> (\(element.path)) is not supported by vmshim"
                )
            }
            for child in element.children { visit(child, parentConsumed: true) }
        }
        visit(root, parentConsumed: true)
        return problems
    }
}
