// vsymctl: the command-line tool for vsymfs (see vsymctl(1)). Option parsing
// only; each command lives in its own file.
// CLI11's inlined string splitting trips GCC 12's -Wnull-dereference inside
// libstdc++ (a false positive in code we do not own).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop

#include <iostream>

#include "vsymctl/daemon_ops.hpp"
#include "vsymctl/dry_run.hpp"
#include "vsymctl/exit_codes.hpp"
#include "vsymctl/explain.hpp"
#include "vsymctl/run.hpp"
#include "vsymctl/trace.hpp"
#include "vsymfs_config.h"

using namespace vsymfs::vsymctl;

int main(int argc, char** argv) {
  CLI::App app{"vsymctl: inspect and control vsymfs variant symlinks"};
  app.set_version_flag("--version", VSYMFS_VERSION);
  app.require_subcommand(1);
  app.fallthrough();

  Connect where;
  auto* mount_opt = app.add_option("-m,--mount", where.mount,
                                   "a path on the vsymfs mount to talk to (default: the current directory)");
  app.add_option("--socket", where.socket, "the daemon's control socket, instead of asking the mount");

  // expand
  ExpandArgs ex;
  auto* expand = app.add_subcommand("expand", "expand a link text as a process would see it (dry run, no mount)");
  expand->add_option("text", ex.text, "the link text (template) to expand")->required();
  expand->add_option("-r,--rules", ex.rules_file, "rules file (default: the built-in default rules)");
  expand->add_option("-u,--user,--as-user", ex.user, "simulate this user (a name or a numeric uid)");
  expand->add_option("--uid", ex.user, "simulate this numeric uid")->check(CLI::NonNegativeNumber);
  expand->add_option("-g,--gid", ex.gid, "primary group (a number or a name; default: the user's)");
  expand->add_option("-e,--env", ex.env, "K=V in the simulated process environment (repeatable)");
  expand->add_flag("--clean-env", ex.clean_env,
                   "start from an empty environment (the default when simulating another user)");
  expand->add_option("-a,--arch", ex.arch, "machine type of the process: i686 etc. simulate a 32-bit process");
  expand->add_option("-U,--universe", ex.universe, "the process's universe (sets the rules' universe variable)");
  expand->add_option("-H,--hostname", ex.hostname, "host name to use for [host] tables and @hostname");
  expand->add_option("-p,--probe-root", ex.probe_root,
                     "choose among @sys candidates by what exists under this directory");
  expand->add_flag("-s,--secure", ex.secure, "a set-id process: the process scope is ignored");
  expand->add_flag("-x,--explain", ex.explain, "print every substituted value and the scope it came from");

  // check
  std::vector<std::string> check_files;
  auto* check = app.add_subcommand("check", "validate rules files");
  check->add_option("files", check_files, "rules files")->required();
  std::vector<std::string> check_hosts;
  check->add_option("-H,--hostname", check_hosts,
                    "also print the member id and the [host] tables this host name gets (repeatable)");

  // explain
  std::string explain_path;
  auto* explain = app.add_subcommand("explain", "show how each symlink in PATH expands for this process, and why");
  explain->add_option("path", explain_path, "the path to walk")->required();

  // set / unset / list
  std::string name, value;
  bool system_scope = false, user_scope = false;
  auto* set = app.add_subcommand("set", "set a run-time variable (your user scope; --system: root or the mount's owner)");
  set->add_option("name", name, "variable name")->required();
  set->add_option("value", value, "value")->required();
  set->add_flag("--system", system_scope, "the system scope (root or the mount's owner)");
  set->add_flag("--user", user_scope, "your user scope (the default)");
  auto* unset = app.add_subcommand("unset", "remove a run-time variable");
  unset->add_option("name", name, "variable name")->required();
  unset->add_flag("--system", system_scope, "the system scope (root or the mount's owner)");
  unset->add_flag("--user", user_scope, "your user scope (the default)");
  auto* list = app.add_subcommand("list", "list run-time variables: yours and the system's");
  auto* list_system = list->add_flag("--system", system_scope, "only the system scope");
  list->add_flag("--user", user_scope, "only your user scope")->excludes(list_system);
  for (auto* sub : {set, unset}) sub->get_option("--system")->excludes(sub->get_option("--user"));

  auto* reload = app.add_subcommand("reload", "re-read the mount's rules file (root or the mount's owner)");
  auto* universe = app.add_subcommand("universe", "print your universe on the mount and where it came from");
  auto* status = app.add_subcommand("status", "print the mount's state and counters");

  // trace
  TraceArgs trace_args;
  auto* trace = app.add_subcommand(
      "trace", "stream each expansion the daemon makes, live (yours; root and the mount's owner: everyone's)");
  trace->add_option("-p,--prefix", trace_args.prefix, "only links at or under this path on the mount");
  trace->add_option("-u,--user,--uid", trace_args.user, "only requests of this user (a name or a uid)");
  trace->add_option("--pid", trace_args.pid, "only requests of this process (thread) id")
      ->check(CLI::NonNegativeNumber);
  trace->add_option("-n,--count", trace_args.count, "stop after this many expansions (default: until interrupted)")
      ->check(CLI::NonNegativeNumber);

  // run
  RunArgs run_args;
  auto* run = app.add_subcommand("run", "run a command in a universe: vsymctl run --universe U -- CMD ARGS...");
  run->add_option("-U,--universe", run_args.universe, "the universe to run the command in");
  run->add_option("-e,--env", run_args.env, "K=V to add to the command's environment (repeatable)");
  run->add_option("command", run_args.command, "the command and its arguments (after --)")->required();
  run->prefix_command();

  for (auto* sub : {explain, set, unset, list, reload, universe, status, trace, run})
    sub->footer("The daemon is the one of the mount holding --mount PATH (default: the current directory),\n"
                "or --socket SOCKET; both may come before or after the command. See vsymctl(1).");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  if (expand->parsed()) return run_expand(ex);
  if (check->parsed()) return run_check(check_files, check_hosts);
  if (explain->parsed()) return run_explain(explain_path);
  if (set->parsed()) return run_set(where, name, value, system_scope);
  if (unset->parsed()) return run_unset(where, name, system_scope);
  if (list->parsed()) {
    using vsymfs::control::ScopeArg;
    return run_list(where, system_scope ? ScopeArg::System : user_scope ? ScopeArg::User : ScopeArg::All);
  }
  if (reload->parsed()) return run_reload(where);
  if (universe->parsed()) return run_universe(where);
  if (status->parsed()) return run_status(where);
  if (trace->parsed()) return run_trace(where, trace_args);
  if (run->parsed()) {
    for (const std::string& extra : run->remaining()) run_args.command.push_back(extra);
    return run_command(where, mount_opt->count() > 0, run_args);
  }
  return kExitUsage;
}
