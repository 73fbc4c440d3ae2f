#include "callback_queue.h"

namespace ugfs2::dlm {
namespace {
thread_local const CallbackQueue* g_running = nullptr;
}  // namespace

ThreadCallbackQueue::ThreadCallbackQueue() : thread_([this] { Run(); }) {}

ThreadCallbackQueue::~ThreadCallbackQueue() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ThreadCallbackQueue::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> l(mu_);
    q_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

bool ThreadCallbackQueue::InCallback() const { return g_running == this; }

void ThreadCallbackQueue::Run() {
  g_running = this;
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [this] { return stop_ || !q_.empty(); });
    if (q_.empty()) return;  // stop_ and drained
    auto fn = std::move(q_.front());
    q_.pop_front();
    l.unlock();
    fn();
    l.lock();
  }
}

bool ManualCallbackQueue::RunOne() {
  if (q_.empty()) return false;
  auto fn = std::move(q_.front());
  q_.pop_front();
  in_callback_ = true;
  fn();
  in_callback_ = false;
  return true;
}

}  // namespace ugfs2::dlm
