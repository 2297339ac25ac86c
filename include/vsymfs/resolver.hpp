// The scopes (docs/vsymfs-rules.5, SCOPES): where a variable's value comes from for one caller.
// A ScopedResolver is built per expansion on the stack; it borrows everything
// and allocates nothing.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vsymfs/caller.hpp"
#include "vsymfs/host_view.hpp"
#include "vsymfs/rules.hpp"
#include "vsymfs/runtime_vars.hpp"
#include "vsymfs/value_source.hpp"

namespace vsymfs {

// The identity builtins: never taken from a process environment.
bool is_identity_builtin(std::string_view name) noexcept;  // USER UID GID GROUP HOME

// Whether these rules can ever take the environment variable `name` from a
// caller's environment: an allowed, not denied, not identity-builtin name,
// or the variable that chooses the universe. A daemon may drop every other
// variable of an environment it keeps.
bool environment_name_used(const Rules& rules, std::string_view name) noexcept;

class ScopedResolver final : public ValueSource {
 public:
  // `runtime` may be null (no run-time values). `host` must have been built
  // from these rules (HostView: the host scope and the member id). All
  // references must outlive the resolver.
  ScopedResolver(const Rules& rules, const HostView& host, const Caller& caller,
                 const RuntimeVars* runtime) noexcept;
  // Values may view this object's own buffers (the formatted ids): a copy
  // would view the original's. Build one where it is used.
  ScopedResolver(const ScopedResolver&) = delete;
  ScopedResolver& operator=(const ScopedResolver&) = delete;

  std::optional<Value> variable(std::string_view name) const override;
  std::optional<Value> magic(std::string_view name) const override;
  std::span<const std::string> sysnames() const override;
  Scope sysnames_scope() const override;
  std::string_view sysnames_note() const override;
  Value universe() const override;
  Value member() const override;

  // Whether the process scope is in use for this caller (not secure, pid != 0,
  // environment known, rules per_caller).
  bool process_scope_active() const noexcept;
  // Whether the values the caller's user set at run time (`vsymctl set`)
  // apply: not to a secure-execution caller, nor to one whose process the
  // daemon cannot see (pid 0: its secure-execution mode is unknown). The
  // [user.NAME] tables of the rules apply to every caller.
  bool runtime_user_scope_active() const noexcept;

 private:
  // The caller's emulation when the rules let it count, else null.
  const Emulation* emulated() const noexcept;
  // [sysname.MACHINE] for an emulated caller's machine, or null.
  const std::vector<std::string>* arch_sysnames(const Emulation& em) const noexcept;

  // implementation-defined members (numbers formatted into small inline buffers)
  const Rules& rules_;
  const HostView& view_;
  const HostInfo& host_;
  const Caller& caller_;
  const RuntimeVars* runtime_;
  char uid_buf_[12]{}, gid_buf_[12]{}, ruid_buf_[12]{}, rgid_buf_[12]{};
  std::string_view uid_s_, gid_s_, ruid_s_, rgid_s_;
};

}  // namespace vsymfs
