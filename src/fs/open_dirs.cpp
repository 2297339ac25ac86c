#include "fs/open_dirs.hpp"

namespace vsymfs::fs {

OpenDirs::~OpenDirs() {
  DirHandle* h = head_;
  while (h) {
    DirHandle* next = h->next_;
    delete h;
    h = next;
  }
}

DirHandle* OpenDirs::adopt(std::unique_ptr<DirHandle> owned) {
  DirHandle* h = owned.release();
  std::lock_guard lock(mu_);
  h->prev_ = nullptr;
  h->next_ = head_;
  if (head_) head_->prev_ = h;
  head_ = h;
  ++count_;
  return h;
}

void OpenDirs::close(DirHandle* h) {
  {
    std::lock_guard lock(mu_);
    if (h->prev_)
      h->prev_->next_ = h->next_;
    else
      head_ = h->next_;
    if (h->next_) h->next_->prev_ = h->prev_;
    --count_;
  }
  delete h;  // closedir outside the lock
}

std::size_t OpenDirs::size() const {
  std::lock_guard lock(mu_);
  return count_;
}

}  // namespace vsymfs::fs
