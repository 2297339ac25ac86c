#include "vsymfs/namespace_hosts.hpp"

#include <gtest/gtest.h>

namespace vsymfs {
namespace {

HostInfo base() {
  HostInfo h;
  h.hostname = "daemon-host";
  h.domainname = "(none)";
  h.machine = "x86_64";
  h.machine32 = "i686";
  return h;
}

std::shared_ptr<const Rules> rules(std::string_view text) {
  auto r = parse_rules(text, "containers.toml");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return std::make_shared<const Rules>(r.ok() ? std::move(r.value()) : Rules{});
}

constexpr std::string_view kRules = R"(
[cluster.members]
"ctr-b*" = 2
[host."ctr-a*"]
COLOR = "red"
[host."ctr-b*"]
COLOR = "blue"
)";

TEST(NamespaceHosts, OneViewPerNamespaceKeptWhileItsNamesStay) {
  NamespaceHosts hosts;
  const auto r = rules(kRules);
  const auto a = hosts.get(101, "ctr-a", "dom-a", r, base());
  EXPECT_EQ(a->host().hostname, "ctr-a");
  EXPECT_EQ(a->host().domainname, "dom-a");
  EXPECT_EQ(a->host().machine, "x86_64") << "the rest is the daemon's";
  ASSERT_NE(a->host_value("COLOR"), nullptr);
  EXPECT_EQ(*a->host_value("COLOR"), "red");
  const auto b = hosts.get(102, "ctr-b", "dom-b", r, base());
  EXPECT_EQ(*b->host_value("COLOR"), "blue");
  EXPECT_EQ(b->memb(), "member2") << "the member id follows the namespace's host name";
  EXPECT_EQ(hosts.get(101, "ctr-a", "dom-a", r, base()), a) << "the same object, not a rebuild";
  EXPECT_EQ(hosts.size(), 2u);
}

// sethostname in the namespace: the next lookup brings the new name, and
// what the rules give it.
TEST(NamespaceHosts, ANewNameOrNewRulesMakeANewView) {
  NamespaceHosts hosts;
  const auto r = rules(kRules);
  const auto a = hosts.get(101, "ctr-a", "dom-a", r, base());
  const auto renamed = hosts.get(101, "ctr-b1", "dom-a", r, base());
  EXPECT_NE(renamed, a);
  EXPECT_EQ(*renamed->host_value("COLOR"), "blue");
  EXPECT_EQ(*a->host_value("COLOR"), "red") << "a reader of the old one keeps it intact";
  EXPECT_EQ(hosts.get(101, "ctr-b1", "dom-b", r, base())->host().domainname, "dom-b");
  const auto reloaded = hosts.get(101, "ctr-b1", "dom-b", rules("[host.\"ctr-*\"]\nCOLOR = \"green\"\n"), base());
  EXPECT_EQ(*reloaded->host_value("COLOR"), "green");
  HostInfo other = base();
  other.machine = "aarch64";
  EXPECT_EQ(hosts.get(101, "ctr-b1", "dom-b", r, other)->host().machine, "aarch64");
  EXPECT_EQ(hosts.size(), 1u);
}

TEST(NamespaceHosts, Bounded) {
  NamespaceHosts hosts(4);
  const auto r = rules(kRules);
  for (std::uint64_t ns = 1; ns <= 100; ++ns) hosts.get(ns, "h" + std::to_string(ns), "", r, base());
  EXPECT_LE(hosts.size(), 4u);
  EXPECT_EQ(hosts.get(100, "h100", "", r, base())->host().hostname, "h100");
}

}  // namespace
}  // namespace vsymfs
