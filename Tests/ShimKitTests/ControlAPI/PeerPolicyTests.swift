import Testing
@testable import ShimKit

@Suite struct PeerPolicyChecks {
    @Test func rootTheShimsUserAndTheSocketGroupOnly() {
        let policy = PeerPolicy(allowedUsers: [0, 1000], allowedGroup: 50)
        #expect(policy.allows(PeerCredentials(pid: 1, uid: 0, gid: 0)))
        #expect(policy.allows(PeerCredentials(pid: 1, uid: 1000, gid: 1000)))
        #expect(policy.allows(PeerCredentials(pid: 1, uid: 2000, gid: 50)), "primary group")
        #expect(policy.allows(PeerCredentials(pid: 1, uid: 2000, gid: 2000), supplementaryGroups: { [10, 50] }), "supplementary group")
        #expect(!policy.allows(PeerCredentials(pid: 1, uid: 2000, gid: 2000), supplementaryGroups: { [10] }))
        let noGroup = PeerPolicy(allowedUsers: [0], allowedGroup: nil)
        #expect(!noGroup.allows(PeerCredentials(pid: 1, uid: 65534, gid: 65534), supplementaryGroups: { [0] }))
        #expect(PeerPolicy.anyone.allows(PeerCredentials(pid: 1, uid: 65534, gid: 65534)))
    }

    @Test func grpcMessagesArePercentEncoded() {
        #expect(DenyingStreamHandler.percentEncoded("uid 5 may not: 100%") == "uid 5 may not: 100%25")
        #expect(DenyingStreamHandler.percentEncoded("é\n") == "%C3%A9%0A")
    }
}
