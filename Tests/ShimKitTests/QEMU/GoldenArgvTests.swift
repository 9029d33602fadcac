import Foundation
import Testing
@testable import ShimKit

/// Fixtures/domains/NAME.xml must render to exactly Fixtures/argv/NAME.args.
/// Regenerate after a deliberate change with VMSHIM_REGENERATE_GOLDEN=1 and
/// review the diff like code.
@Suite struct GoldenArgv {
    static let names: [String] = {
        let dir = Fixtures.sourceDirectory + "/domains"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return files.filter { $0.hasSuffix(".xml") }.map { String($0.dropLast(4)) }.sorted()
    }()

    @Test func everyFixtureHasAGoldenFile() {
        #expect(Self.names.count >= 5, "fixtures missing from \(Fixtures.sourceDirectory)/domains")
    }

    @Test(arguments: names) func rendersTheGoldenArgv(name: String) throws {
        let xmlPath = Fixtures.sourceDirectory + "/domains/\(name).xml"
        let goldenPath = Fixtures.sourceDirectory + "/argv/\(name).args"
        let rendered = try Fixtures.plan(try Fixtures.read(xmlPath), file: "\(name).xml").rendered()
        if ProcessInfo.processInfo.environment["VMSHIM_REGENERATE_GOLDEN"] == "1" {
            try rendered.write(toFile: goldenPath, atomically: true, encoding: .utf8)
        }
        let golden = try Fixtures.read(goldenPath)
        if rendered != golden {
            let ours = rendered.split(separator: "\n", omittingEmptySubsequences: false)
            let theirs = golden.split(separator: "\n", omittingEmptySubsequences: false)
            let firstDifference = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }
            Issue.record(
                """
                \(name): argv differs from \(goldenPath) at line \((firstDifference?.offset ?? min(ours.count, theirs.count)) + 1)
                  got:      \(firstDifference?.element.0 ?? "<end>")
                  expected: \(firstDifference?.element.1 ?? "<end>")
                """)
        }
    }

    /// The plan is a pure function: the same spec renders the same argv twice.
    @Test func planningIsDeterministic() throws {
        let xml = try Fixtures.read(Fixtures.sourceDirectory + "/domains/q35-virtio.xml")
        #expect(try Fixtures.plan(xml).arguments == Fixtures.plan(xml).arguments)
    }
}
