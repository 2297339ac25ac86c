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

TEST(NamespaceHosts, OneHostPerNamespaceKeptWhileItsNamesStay) {
  NamespaceHosts hosts;
  const auto a = hosts.get(101, "ctr-a", "dom-a", base());
  EXPECT_EQ(a->hostname, "ctr-a");
  EXPECT_EQ(a->domainname, "dom-a");
  EXPECT_EQ(a->machine, "x86_64") << "the rest is the daemon's";
  const auto b = hosts.get(102, "ctr-b", "dom-b", base());
  EXPECT_EQ(b->hostname, "ctr-b");
  EXPECT_EQ(hosts.get(101, "ctr-a", "dom-a", base()), a) << "the same object, not a rebuild";
  EXPECT_EQ(hosts.size(), 2u);
}

// sethostname in the namespace: the next lookup brings the new name.
TEST(NamespaceHosts, ANewNameMakesANewHost) {
  NamespaceHosts hosts;
  const auto a = hosts.get(101, "ctr-a", "dom-a", base());
  const auto renamed = hosts.get(101, "ctr-a2", "dom-a", base());
  EXPECT_NE(renamed, a);
  EXPECT_EQ(renamed->hostname, "ctr-a2");
  EXPECT_EQ(a->hostname, "ctr-a") << "a reader of the old one keeps it intact";
  EXPECT_EQ(hosts.get(101, "ctr-a2", "dom-b", base())->domainname, "dom-b");
  HostInfo other = base();
  other.machine = "aarch64";
  EXPECT_EQ(hosts.get(101, "ctr-a2", "dom-b", other)->machine, "aarch64");
  EXPECT_EQ(hosts.size(), 1u);
}

TEST(NamespaceHosts, Bounded) {
  NamespaceHosts hosts(4);
  for (std::uint64_t ns = 1; ns <= 100; ++ns) hosts.get(ns, "h" + std::to_string(ns), "", base());
  EXPECT_LE(hosts.size(), 4u);
  EXPECT_EQ(hosts.get(100, "h100", "", base())->hostname, "h100");
}

}  // namespace
}  // namespace vsymfs
