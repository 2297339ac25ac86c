// HostView: the host tables and the member id one host name gets from the
// rules, matched once; and that the resolver answers from it (${MEMBER},
// {memb}, host values) with one shared rules file for a whole cluster.
#include "vsymfs/host_view.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "vsymfs/link_template.hpp"
#include "vsymfs/resolver.hpp"

namespace vsymfs {
namespace {

HostInfo host_named(std::string name) {
  HostInfo h;
  h.hostname = std::move(name);
  h.domainname = "(none)";
  h.machine = "x86_64";
  h.machine32 = "i686";
  h.osrelease = "6.1.0";
  h.ostype = "Linux";
  h.kernel_ident = "#1";
  return h;
}

Rules parse(std::string_view text) {
  auto r = parse_rules(text, "cluster.toml");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? std::move(r.value()) : Rules{};
}

// The example a cluster administrator writes (docs/cluster.md).
constexpr std::string_view kClusterRules = R"(
[cluster]
member = 0
[cluster.members]
"node1*" = 1
"node2*" = 2
"node*" = 9

[host."node1*"]
ROLE = "head"
[host."node*"]
ROLE = "worker"
SCRATCH = "/scratch/node"
[host."*"]
SCRATCH = "/scratch/other"
SITE = "lab"
)";

std::string expand(const Rules& rules, const HostView& view, std::string_view raw) {
  Caller caller;
  caller.pid = 1;
  const ScopedResolver resolver(rules, view, caller, nullptr);
  const Template t = Template::parse(raw, ParseOptions{rules.families, rules.universes.names});
  std::string out;
  const auto r = t.expand(resolver, ExpandOptions{}, out);
  EXPECT_TRUE(r.ok()) << raw;
  return out;
}

TEST(HostView, MatchesTablesInFileOrderAndMergesFirstWins) {
  const Rules rules = parse(kClusterRules);
  const HostView v(rules, host_named("node12"));
  ASSERT_EQ(v.matched_tables().size(), 3u);
  EXPECT_EQ(v.matched_tables()[0], 0u);
  EXPECT_EQ(v.matched_tables()[1], 1u);
  EXPECT_EQ(v.matched_tables()[2], 2u);
  ASSERT_NE(v.host_value("ROLE"), nullptr);
  EXPECT_EQ(*v.host_value("ROLE"), "head");
  EXPECT_EQ(*v.host_value("SCRATCH"), "/scratch/node");
  EXPECT_EQ(*v.host_value("SITE"), "lab");
  EXPECT_EQ(v.host_value("NOPE"), nullptr);

  const HostView login(rules, host_named("login"));
  ASSERT_EQ(login.matched_tables().size(), 1u);
  EXPECT_EQ(login.matched_tables()[0], 2u);
  EXPECT_EQ(login.host_value("ROLE"), nullptr);
  EXPECT_EQ(*login.host_value("SCRATCH"), "/scratch/other");
}

TEST(HostView, MemberFromTheFirstMatchingPatternElseTheFallback) {
  const Rules rules = parse(kClusterRules);
  const struct {
    const char* host;
    int member;
    const char* pattern;
  } cases[] = {
      {"node1", 1, "node1*"},   {"node17.example.org", 1, "node1*"}, {"node2", 2, "node2*"},
      {"NODE2", 2, "node2*"},   // host names are case-insensitive
      {"node3", 9, "node*"},    {"login", 0, ""},
  };
  for (const auto& c : cases) {
    const HostView v(rules, host_named(c.host));
    EXPECT_EQ(v.member(), c.member) << c.host;
    EXPECT_EQ(v.memb(), "member" + std::to_string(c.member)) << c.host;
    EXPECT_EQ(v.member_number(), std::to_string(c.member)) << c.host;
    EXPECT_EQ(v.member_pattern(), c.pattern) << c.host;
  }
  // Without [cluster.members]: [cluster] member for every host, as before.
  const Rules single = parse("[cluster]\nmember = 5\n");
  EXPECT_EQ(HostView(single, host_named("anything")).member(), 5);
  EXPECT_EQ(HostView(Rules{}, host_named("anything")).memb(), "member0");
}

TEST(HostView, OneRulesFileServesEveryHostOfACluster) {
  const Rules rules = parse(kClusterRules);
  const HostView n1(rules, host_named("node1"));
  const HostView n2(rules, host_named("node2"));
  const HostView other(rules, host_named("gateway"));
  const std::string raw = "/cluster/members/{memb}/${MEMBER}/${ROLE:-none}${SCRATCH}/@hostname";
  EXPECT_EQ(expand(rules, n1, raw), "/cluster/members/member1/1/head/scratch/node/node1");
  EXPECT_EQ(expand(rules, n2, raw), "/cluster/members/member2/2/worker/scratch/node/node2");
  EXPECT_EQ(expand(rules, other, raw), "/cluster/members/member0/0/none/scratch/other/gateway");
}

TEST(HostView, TheViewOwnsItsValues) {
  HostView v = [] {
    const Rules rules = parse(kClusterRules);
    return HostView(rules, host_named("node2"));
  }();
  // The rules are gone; the view still answers.
  EXPECT_EQ(*v.host_value("ROLE"), "worker");
  EXPECT_EQ(v.member(), 2);
  EXPECT_EQ(v.host().hostname, "node2");
}

}  // namespace
}  // namespace vsymfs
