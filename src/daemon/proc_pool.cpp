#include "daemon/proc_pool.hpp"

#include <algorithm>
#include <thread>

#include "daemon/proc_reader.hpp"

namespace vsymfs::daemon {

ProcPool::ProcPool(unsigned threads, std::size_t max_queued) : state_(std::make_shared<State>()) {
  state_->max_queued = max_queued;
  for (unsigned i = 0; i < std::max(1u, threads); ++i) std::thread([s = state_] { work(*s); }).detach();
}

ProcPool::~ProcPool() {
  {
    std::lock_guard lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  // The helpers are detached, not joined: one may be stuck in the kernel.
  // Each holds the shared state, so none touches freed memory.
}

bool ProcPool::submit(std::shared_ptr<ProcJob> job) {
  {
    std::lock_guard lock(state_->mu);
    if (state_->stop || state_->queue.size() >= state_->max_queued) return false;
    state_->queue.push_back(std::move(job));
  }
  state_->cv.notify_one();
  return true;
}

bool ProcPool::run(const std::shared_ptr<ProcJob>& job, std::chrono::milliseconds timeout) {
  bool completed = false;
  if (submit(job)) {
    std::unique_lock lock(job->mu);
    completed = job->cv.wait_for(lock, timeout, [&] { return job->done; });
    if (!completed) job->abandoned = true;
  }
  if (!completed) counter_.load(std::memory_order_acquire)->fetch_add(1, std::memory_order_relaxed);
  return completed;
}

void ProcPool::count_timeouts_in(std::atomic<std::uint64_t>* counter) noexcept {
  std::atomic<std::uint64_t>* old = counter_.exchange(counter, std::memory_order_acq_rel);
  if (old != counter) counter->fetch_add(old->exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
}

void ProcPool::work(State& st) {
  for (;;) {
    std::shared_ptr<ProcJob> job;
    {
      std::unique_lock lock(st.mu);
      st.cv.wait(lock, [&] { return st.stop || !st.queue.empty(); });
      if (st.stop) return;
      job = std::move(st.queue.front());
      st.queue.pop_front();
    }
    {
      std::lock_guard jl(job->mu);
      if (job->abandoned) continue;
    }
    read_process(*job);
    {
      std::lock_guard jl(job->mu);
      job->done = true;
    }
    job->cv.notify_one();
  }
}

void ProcPool::read_process(ProcJob& job) {
  // The ELF class decides the auxv word size, so it comes first.
  unsigned elf_class = 64;
  if (auto exe = proc::read_exe(job.pid); exe) {
    if (exe->elf_class != 0) elf_class = exe->elf_class;
    // A program of another architecture: its exe is the emulator.
    if (job.binfmt) job.emulation = job.binfmt->emulation_of(exe->dev, exe->ino);
  }
  bool persona32 = false;
  if (auto p = proc::read_personality(job.pid); p) persona32 = proc::is_linux32_personality(*p);
  job.compat32 = elf_class == 32 || persona32;
  if (auto s = proc::read_auxv_secure(job.pid, elf_class == 32 ? 4 : 8); s) job.auxv_secure = *s;
  std::vector<std::string> env;
  // A process looking up what it execs (`VAR=x cmd` through a $VAR link)
  // means the environment it passes to the new program.
  if (job.try_execve_envp) {
    if (auto in_exec = proc::read_execve_envp(job.pid, env); in_exec && *in_exec) {
      job.environ = std::move(env);
      job.environ_ok = true;
      job.from_execve = true;
      return;
    }
  }
  if (auto e = proc::read_environ(job.pid, env); e) {
    job.environ = std::move(env);
    job.environ_ok = true;
  }
}

}  // namespace vsymfs::daemon
