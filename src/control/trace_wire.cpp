#include "control/trace_wire.hpp"

#include <cstring>
#include <ctime>

namespace vsymfs::control {
namespace {

std::string iso_time_us(std::chrono::system_clock::time_point tp) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(tp.time_since_epoch()).count();
  const std::time_t t = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(us % 1000000));
  return buf;
}

std::string field(const Reply& r, const char* key) {
  const std::string* v = r.find(key);
  return v != nullptr ? *v : std::string();
}

}  // namespace

void add_substitutions(Reply& reply, const std::vector<Substitution>& subs) {
  for (const Substitution& s : subs) {
    reply.add("ref", s.reference);
    reply.add("value", s.value);
    // A builtin that is not the host's says why: "builtin: emulated by ...".
    reply.add("scope", s.note.empty() ? std::string(to_string(s.scope))
                                      : std::string(to_string(s.scope)) + ": " + s.note);
  }
}

std::vector<std::string> substitution_lines(const Reply& reply) {
  std::vector<std::string> out;
  const auto& f = reply.fields;
  for (std::size_t i = 0; i + 2 < f.size(); ++i) {
    if (f[i].key != "ref" || f[i + 1].key != "value" || f[i + 2].key != "scope") continue;
    out.push_back(f[i].value + " = " + f[i + 1].value + "  (" + f[i + 2].value + ")");
    i += 2;
  }
  return out;
}

std::string errno_text(int code, const std::string& message) {
  const char* name = ::strerrorname_np(code);
  return std::string(name != nullptr ? name : "E" + std::to_string(code)) + ": " + message;
}

Reply trace_started(bool sees_all) {
  Reply r;
  r.add("kind", "started");
  r.add("sees", sees_all ? "all" : "own");
  return r;
}

Reply trace_event(const TraceEvent& e) {
  Reply r;
  r.add("kind", "event");
  r.add("time", iso_time_us(e.time));
  r.add("pid", std::to_string(e.pid));
  r.add("uid", std::to_string(e.uid));
  r.add("comm", e.comm);
  r.add("path", e.path);
  r.add("raw", e.raw);
  if (e.error == 0) {
    r.add("expansion", e.expansion);
  } else {
    r.add("error", errno_text(e.error, e.message));
  }
  add_substitutions(r, e.substitutions);
  return r;
}

Reply trace_dropped(std::uint64_t count, std::uint64_t total) {
  Reply r;
  r.add("kind", "dropped");
  r.add("count", std::to_string(count));
  r.add("total", std::to_string(total));
  return r;
}

std::string format_trace_record(const Reply& record) {
  const std::string kind = field(record, "kind");
  if (kind == "dropped")
    return "dropped " + field(record, "count") +
           " events (this reader was too slow; " + field(record, "total") + " in all)";
  if (kind != "event") return "";
  const std::string path = field(record, "path");
  std::string line = field(record, "time") + " uid " + field(record, "uid") + " pid " + field(record, "pid") +
                     " (" + field(record, "comm") + ") " + (path.empty() ? std::string("?") : path) + ": " +
                     field(record, "raw") + " -> ";
  if (const std::string* err = record.find("error")) {
    line += "error " + *err;
  } else {
    line += field(record, "expansion");
  }
  const std::vector<std::string> subs = substitution_lines(record);
  if (!subs.empty()) {
    line += "  [";
    for (std::size_t i = 0; i < subs.size(); ++i) line += (i ? ", " : "") + subs[i];
    line += "]";
  }
  return line;
}

}  // namespace vsymfs::control
