// A scratch directory that lives exactly as long as one test needs it.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace vsymfs::test {

// Makes <parent>/<prefix>-XXXXXX with mkdtemp (a fresh name nobody else can
// have claimed, unlike a pid-based one) and removes the whole tree when it
// goes, even when the test failed half-way: nothing is left in /tmp.
class TempDir {
 public:
  // $TMPDIR when it is an absolute path, else /tmp. A relative $TMPDIR is
  // ignored because the path is handed to daemons and children that may run
  // in another working directory.
  static std::string default_parent() {
    const char* env = std::getenv("TMPDIR");
    if (env != nullptr && env[0] == '/') return env;
    return "/tmp";
  }

  // `prefix` names the test in the directory's name, so a leftover (a killed
  // run) says where it came from. mkdtemp always makes the directory 0700;
  // `mode` is applied after it (chmod, so the umask does not apply), for
  // tests whose other uids must reach the tree. Throws std::runtime_error
  // with the template and errno when the directory cannot be made, which
  // GoogleTest reports as the failing test's error.
  explicit TempDir(std::string_view prefix, mode_t mode = 0700, const std::string& parent = default_parent()) {
    std::string tmpl = parent;
    tmpl += '/';
    tmpl += prefix;
    tmpl += "-XXXXXX";
    std::string path = tmpl;  // glibc fills in the X's even when mkdtemp fails
    if (::mkdtemp(path.data()) == nullptr) {
      throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
    }
    if (mode != 0700 && ::chmod(path.c_str(), mode) != 0) {
      const int err = errno;
      ::rmdir(path.c_str());
      throw std::runtime_error("chmod " + path + ": " + std::strerror(err));
    }
    path_ = std::move(path);
  }

  ~TempDir() { remove(); }

  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // A moved-from TempDir owns nothing and removes nothing.
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempDir& operator=(TempDir&& other) noexcept {
    if (this != &other) {
      remove();
      path_ = std::exchange(other.path_, {});
    }
    return *this;
  }

  const std::string& path() const { return path_; }

 private:
  // Never throws: it runs in destructors, often while a test is already
  // failing. A tree that cannot be removed is said on stderr rather than
  // failing the test, so the assertions that matter stay the only failures.
  void remove() noexcept {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    if (ec) std::fprintf(stderr, "TempDir: could not remove %s: %s\n", path_.c_str(), std::strerror(ec.value()));
    path_.clear();
  }

  std::string path_;
};

}  // namespace vsymfs::test
