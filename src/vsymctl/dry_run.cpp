#include "vsymctl/dry_run.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <iostream>
#include <optional>

#include "vsymctl/exit_codes.hpp"
#include "vsymctl/output.hpp"
#include "vsymfs/caller.hpp"
#include "vsymfs/emulation.hpp"
#include "vsymfs/link_template.hpp"
#include "vsymfs/resolver.hpp"
#include "vsymfs/rules.hpp"
#include "vsymfs/unique_fd.hpp"

extern char** environ;

namespace vsymfs::vsymctl {
namespace {

template <class Id>
std::optional<Id> parse_id(const std::string& s) {
  Id v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || v == static_cast<Id>(-1)) return std::nullopt;
  return v;
}

// Architectures whose processes are 32-bit: --arch with one of these
// simulates a compat32 caller; any other name simulates a native process on
// a machine of that type.
bool is_32bit_arch(std::string_view arch) {
  static constexpr std::array<std::string_view, 14> k32{"i386",  "i486",   "i586",  "i686", "x86",
                                                        "armv6l", "armv7l", "armhf", "arm",  "ppc",
                                                        "mips",  "mipsel", "s390",  "sparc"};
  return std::find(k32.begin(), k32.end(), arch) != k32.end();
}

// Fills names, home and groups from NSS, as the daemon does for a real caller.
Result<void> fill_identity(const ExpandArgs& args, Caller& c) {
  std::array<char, 16384> buf{};
  passwd pw{};
  passwd* found = nullptr;
  c.uid = ::getuid();
  if (!args.user.empty()) {
    if (auto uid = parse_id<uid_t>(args.user)) {
      c.uid = *uid;
    } else {
      ::getpwnam_r(args.user.c_str(), &pw, buf.data(), buf.size(), &found);
      if (found == nullptr) return make_error(ENOENT, "no such user '" + args.user + "'");
      c.uid = pw.pw_uid;
    }
  }
  if (found == nullptr) ::getpwuid_r(c.uid, &pw, buf.data(), buf.size(), &found);
  // A uid with no passwd entry has no primary group: assume the user's
  // private group (gid = uid), as useradd would have made it.
  c.gid = args.user.empty() ? ::getgid() : static_cast<gid_t>(c.uid);
  if (found != nullptr) {
    c.user_name = pw.pw_name;
    c.home = pw.pw_dir;
    if (!args.user.empty()) c.gid = pw.pw_gid;
  }

  group gr{};
  group* gfound = nullptr;
  std::array<char, 16384> gbuf{};
  if (!args.gid.empty()) {
    if (auto gid = parse_id<gid_t>(args.gid)) {
      c.gid = *gid;
    } else {
      ::getgrnam_r(args.gid.c_str(), &gr, gbuf.data(), gbuf.size(), &gfound);
      if (gfound == nullptr) return make_error(ENOENT, "no such group '" + args.gid + "'");
      c.gid = gr.gr_gid;
    }
  }

  // Supplementary groups: the user's from the group database.
  if (!c.user_name.empty()) {
    int n = 64;
    std::vector<gid_t> groups(static_cast<std::size_t>(n));
    if (::getgrouplist(c.user_name.c_str(), c.gid, groups.data(), &n) < 0) {
      groups.resize(static_cast<std::size_t>(n));
      ::getgrouplist(c.user_name.c_str(), c.gid, groups.data(), &n);
    }
    groups.resize(static_cast<std::size_t>(std::max(n, 0)));
    for (gid_t g : groups)
      if (g != c.gid) c.groups.push_back(g);
  }
  auto group_name = [&](gid_t g) -> std::string {
    group* f = nullptr;
    ::getgrgid_r(g, &gr, gbuf.data(), gbuf.size(), &f);
    return f != nullptr ? f->gr_name : "";
  };
  c.group_name = group_name(c.gid);
  if (!c.group_name.empty()) c.group_names.push_back(c.group_name);
  for (gid_t g : c.groups)
    if (std::string name = group_name(g); !name.empty()) c.group_names.push_back(std::move(name));
  c.ruid = c.uid;
  c.rgid = c.gid;
  return {};
}

Result<Caller> simulated_caller(const ExpandArgs& args, const Rules& rules) {
  Caller c;
  if (auto ok = fill_identity(args, c); !ok) return ok.error();
  // Any nonzero pid: the scopes only ask whether there is a process at all.
  c.pid = ::getpid();
  c.secure = args.secure;
  c.environ_known = true;
  // First definition wins, so the most specific settings go first.
  if (!args.universe.empty()) {
    const auto& names = rules.universes.names;
    if (!names.empty() && std::find(names.begin(), names.end(), args.universe) == names.end()) {
      std::string declared;
      for (const auto& n : names) declared += (declared.empty() ? "" : ", ") + n;
      return make_error(EINVAL, "unknown universe '" + args.universe + "' (declared: " + declared + ")");
    }
    c.environ.push_back(rules.universes.env_var + "=" + args.universe);
  }
  for (const std::string& kv : args.env) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return make_error(EINVAL, "--env expects NAME=VALUE, got '" + kv + "'");
    c.environ.push_back(kv);
  }
  // Our own environment describes the process we simulate only when it is
  // us: a different user's processes do not share our variables.
  if (!args.clean_env && args.user.empty())
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) c.environ.emplace_back(*e);
  if (!args.arch.empty()) c.compat32 = is_32bit_arch(args.arch);
  return c;
}

// Probes @sys candidates under a directory (relative targets) or as given
// (absolute targets). An entry of any type counts, as a dangling link would
// for the daemon's lstat-based probe.
class DirectoryProbe final : public Probe {
 public:
  explicit DirectoryProbe(int dir_fd) : dir_fd_(dir_fd) {}
  bool exists(std::string_view target) const override {
    std::string path(target);
    struct stat st {};
    return ::fstatat(dir_fd_, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  }

 private:
  int dir_fd_;
};

}  // namespace

int run_expand(const ExpandArgs& args) {
  Rules file_rules;
  const Rules* rules = &default_rules();
  if (!args.rules_file.empty()) {
    auto loaded = load_rules_file(args.rules_file);
    if (!loaded) {
      print_error(loaded.error());
      return kExitFailed;
    }
    file_rules = std::move(loaded.value());
    rules = &file_rules;
  }

  auto caller = simulated_caller(args, *rules);
  if (!caller) {
    print_error(caller.error());
    return kExitUsage;
  }
  HostInfo host = read_host_info();
  if (!args.hostname.empty()) host.hostname = args.hostname;
  // A machine the host does not run natively (neither its own nor its
  // 32-bit personality's) but an emulator can: the caller is simulated as a
  // program of that architecture run by qemu-user through binfmt_misc, as
  // the daemon finds one, with @emul qemu-<target>, its [sysname.MACHINE]
  // list or the built-in one for it.
  if (!args.arch.empty()) {
    const auto guest = elf_machine_named(args.arch);
    if (guest && guest->machine != host.machine && guest->machine != host.machine32) {
      const std::string emulator = "qemu-" + std::string(guest->qemu);
      Emulation em = make_emulation(*guest, emulator, emulator);
      em.source = "as if emulated by " + em.emul + " (--arch " + args.arch + ")";
      caller->compat32 = false;
      caller->emulation = std::make_shared<const Emulation>(std::move(em));
    }
  }
  if (!args.arch.empty() && !caller->emulation) (caller->compat32 ? host.machine32 : host.machine) = args.arch;
  // Sysname lists the rules did not set are derived from the machine type;
  // a simulated native machine of another type gets its own lists.
  if (!args.arch.empty() && !caller->compat32 && !caller->emulation && !rules->sysnames_configured) {
    if (rules != &file_rules) {
      file_rules = *rules;
      rules = &file_rules;
    }
    file_rules.sysnames = default_sysnames(host.machine, false);
    file_rules.sysnames32 = default_sysnames(host.machine, true);
  }

  UniqueFd probe_fd;
  std::optional<DirectoryProbe> probe;
  if (!args.probe_root.empty()) {
    probe_fd.reset(::open(args.probe_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!probe_fd) {
      print_error(make_error(errno, "cannot open --probe-root " + args.probe_root + ": " + std::strerror(errno)));
      return kExitUsage;
    }
    probe.emplace(probe_fd.get());
  }

  const ParseOptions parse_opts{rules->families, rules->universes.names};
  const Template tmpl = Template::parse(args.text, parse_opts);
  const HostView view(*rules, host);
  const ScopedResolver resolver(*rules, view, *caller, nullptr);
  std::vector<Substitution> trace;
  ExpandOptions opts;
  opts.undefined = rules->undefined;
  opts.probe = probe ? &*probe : nullptr;
  opts.trace = args.explain ? &trace : nullptr;
  std::string out;
  const Result<void> expanded = tmpl.expand(resolver, opts, out);
  probe_fd.reset();
  if (!expanded) {
    print_error(expanded.error());
    return kExitFailed;
  }
  std::cout << out << '\n';
  if (args.explain) {
    std::cout << "rules: " << rules->origin << '\n';
    if (trace.empty()) std::cout << "no substitutions\n";
    for (const Substitution& s : trace)
      std::cout << "  " << s.reference << " = " << s.value << "  (" << to_string(s.scope)
                << (s.note.empty() ? "" : ": ") << s.note << ")\n";
  }
  return kExitOk;
}

int run_check(const std::vector<std::string>& files, const std::vector<std::string>& hostnames) {
  int status = kExitOk;
  for (const std::string& file : files) {
    auto rules = load_rules_file(file);
    if (!rules) {
      // Parse errors already read "FILE:LINE:COLUMN: ...".
      std::cerr << rules.error().message << '\n';
      status = kExitFailed;
      continue;
    }
    std::cout << file << ": ok\n";
    // What one shared file gives each host of a cluster.
    for (const std::string& name : hostnames) {
      HostInfo host = read_host_info();
      host.hostname = name;
      const HostView view(*rules, host);
      std::cout << "  host " << name << ": member " << view.member();
      if (!view.member_pattern().empty()) std::cout << " ([cluster.members] \"" << view.member_pattern() << "\")";
      std::cout << "; host tables:";
      if (view.matched_tables().empty()) std::cout << " none";
      for (std::size_t i = 0; i < view.matched_tables().size(); ++i)
        std::cout << (i == 0 ? " \"" : ", \"") << rules->hosts[view.matched_tables()[i]].pattern << '"';
      std::cout << '\n';
    }
  }
  return status;
}

}  // namespace vsymfs::vsymctl
