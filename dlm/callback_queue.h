// CallbackQueue: the ordered, per-lockspace queue on which completion and blocking callbacks run.
//
// Callbacks are never run on the transport thread or while the lock manager holds its mutex; they
// run one at a time, in the order they were queued (like the kernel's ordered callback workqueue),
// so a callback may call back into the lock manager freely. Two implementations: a dedicated
// thread (production) and a manual queue drained by the test (deterministic in-process runs).
//
// Thread safety: Post() from any thread.
#ifndef UGFS2_DLM_CALLBACK_QUEUE_H_
#define UGFS2_DLM_CALLBACK_QUEUE_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace ugfs2::dlm {

class CallbackQueue {
 public:
  virtual ~CallbackQueue() = default;
  virtual void Post(std::function<void()> fn) = 0;
  // True when called from inside a callback run by this queue.
  virtual bool InCallback() const = 0;
};

// Runs callbacks on its own thread. The destructor drains pending callbacks and joins.
class ThreadCallbackQueue final : public CallbackQueue {
 public:
  ThreadCallbackQueue();
  ~ThreadCallbackQueue() override;
  void Post(std::function<void()> fn) override;
  bool InCallback() const override;

 private:
  void Run();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;  // guarded by mu_
  bool stop_ = false;                    // guarded by mu_
  std::thread thread_;
};

// Queues callbacks until the owner calls RunOne()/RunAll() (single-threaded tests).
class ManualCallbackQueue final : public CallbackQueue {
 public:
  void Post(std::function<void()> fn) override { q_.push_back(std::move(fn)); }
  bool InCallback() const override { return in_callback_; }
  bool empty() const { return q_.empty(); }
  size_t size() const { return q_.size(); }
  bool RunOne();
  void RunAll() {
    while (RunOne()) {
    }
  }
  void Clear() { q_.clear(); }

 private:
  std::deque<std::function<void()>> q_;
  bool in_callback_ = false;
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_CALLBACK_QUEUE_H_
