#include "fs/logging.hpp"

#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <syslog.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <mutex>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>

namespace vsymfs::fs {

namespace {

std::atomic<bool> g_holding_fuse_messages{true};
std::mutex g_held_mu;
std::string g_held_fuse_messages;

// libfuse's own messages go to our log, one line each (libfuse writes some
// lines in pieces). Until startup succeeds they are held back and become
// part of the one-line startup error instead.
[[gnu::format(printf, 2, 0)]] void log_from_libfuse(enum fuse_log_level level, const char* fmt, va_list ap) {
  thread_local std::string pending;
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  pending += buf;
  if (pending.empty() || pending.back() != '\n') return;
  while (!pending.empty() && (pending.back() == '\n' || pending.back() == ' ')) pending.pop_back();
  if (g_holding_fuse_messages.load()) {
    std::lock_guard lock(g_held_mu);
    if (level <= FUSE_LOG_WARNING) g_held_fuse_messages += (g_held_fuse_messages.empty() ? "" : "; ") + pending;
  } else {
    spdlog::log(level <= FUSE_LOG_ERR      ? spdlog::level::err
                : level <= FUSE_LOG_NOTICE ? spdlog::level::info
                                           : spdlog::level::debug,
                "libfuse: {}", pending);
  }
  pending.clear();
}

}  // namespace

void setup_logging(const Options& o) {
  std::shared_ptr<spdlog::logger> log;
  if (o.foreground)
    log = std::make_shared<spdlog::logger>("vsymfs", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  else
    log = std::make_shared<spdlog::logger>(
        "vsymfs", std::make_shared<spdlog::sinks::syslog_sink_mt>("vsymfs", LOG_PID, LOG_DAEMON, false));
  log->set_level(o.debug ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_default_logger(std::move(log));
  fuse_set_log_func(log_from_libfuse);
}

std::string held_fuse_messages() {
  std::lock_guard lock(g_held_mu);
  return g_held_fuse_messages.empty() ? std::string() : " (libfuse: " + g_held_fuse_messages + ")";
}

void stop_holding_fuse_messages() noexcept { g_holding_fuse_messages = false; }

}  // namespace vsymfs::fs
