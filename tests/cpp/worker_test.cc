// The thread-owning Worker both engines share (engine/worker.h) and their StallClock
// (engine/stall_clock.h), without MPI: items run in push order with consecutive sequence
// numbers on the worker's own thread; stop() drains the queue, joins and is idempotent; pushes
// after stop or poison are refused with the engine's text (naming the first fatal error);
// poison fails every queued item with its reason; a poke wakes the thread once; the stall
// schedule warns every stall_warning_s and times out after stall_timeout_s.
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "common/error.h"
#include "engine/stall_clock.h"
#include "engine/worker.h"

using namespace dlion;

namespace {

struct Item {
  std::string name;
  HandlePtr handle;
};

// The refusal texts of a toy engine; refusals counts the calls (only refusals may call it).
struct Refuse {
  int* refusals;
  std::string operator()(const std::string* poisoned) const {
    ++*refusals;
    return poisoned ? "stopped after an earlier error: " + *poisoned
                    : std::string("shut down (call dlion.init() again)");
  }
};

HandlePtr push(Worker<Item>& w, const std::string& name, int* refusals) {
  return w.push(name, Refuse{refusals},
                [&](HandlePtr h) { return Item{name, std::move(h)}; });
}

// The EngineShutdown message that push() throws, or "" when it throws none.
std::string refusal(Worker<Item>& w, const std::string& name, int* refusals) {
  try {
    push(w, name, refusals);
  } catch (const EngineShutdown& e) {
    return e.what();
  }
  return "";
}

// The message of the error a failed handle rethrows ("" when it completed).
std::string error_of(const HandlePtr& h) {
  try {
    h->wait(-1);
  } catch (const EngineShutdown& e) {
    return e.what();
  }
  return "";
}

void test_runs_in_order_and_stop_drains() {
  Worker<Item> w("dlion-test");
  int refusals = 0;
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  std::vector<std::string> ran;
  std::vector<std::uint64_t> seqs;
  std::thread::id body_thread;
  w.start([&] {
    body_thread = std::this_thread::get_id();
    open.wait();  // everything below is queued before the first item is taken
    Item it;
    while (w.next(it)) {
      ran.push_back(it.name);
      seqs.push_back(it.handle->seq());
      it.handle->complete();
    }
  });
  std::vector<HandlePtr> handles;
  for (const char* n : {"a", "b", "c"}) handles.push_back(push(w, n, &refusals));
  gate.set_value();
  CHECK(w.stop(), "the first stop joins");
  CHECK(!w.stop(), "a second stop does nothing");
  CHECK((ran == std::vector<std::string>{"a", "b", "c"}), "stop drains the queue in order");
  CHECK((seqs == std::vector<std::uint64_t>{0, 1, 2}), "consecutive sequence numbers");
  for (const auto& h : handles) CHECK(h->done() && error_of(h).empty(), "completed");
  CHECK(body_thread != std::this_thread::get_id(), "the body ran on the worker's thread");
  CHECK(w.cpu_seconds() >= 0.0, "measured");
  CHECK(refusals == 0, "accepted pushes format no refusal");
  CHECK(refusal(w, "late", &refusals) == "shut down (call dlion.init() again)",
        "refused after stop: %s", refusal(w, "late", &refusals).c_str());
}

void test_poison_fails_queued_and_refuses() {
  Worker<Item> w("dlion-test");  // never started: the queue only
  int refusals = 0;
  const HandlePtr a = push(w, "a", &refusals);
  const HandlePtr b = push(w, "b", &refusals);
  std::vector<std::string> failed;
  const auto fail = [&](Item& it) {
    failed.push_back(it.name);
    it.handle->fail(std::make_exception_ptr(EngineShutdown("'" + it.name + "' was not run: boom")),
                    false);
  };
  CHECK(w.poisoned().empty(), "healthy");
  CHECK(w.poison("boom", fail) == 2, "both queued items failed");
  CHECK((failed == std::vector<std::string>{"a", "b"}), "in queue order");
  CHECK(error_of(a) == "'a' was not run: boom" && error_of(b) == "'b' was not run: boom",
        "the reason reaches each item");
  CHECK(w.poison("later", fail) == 0 && w.poisoned() == "boom", "the first reason stays");
  CHECK(refusal(w, "c", &refusals) == "stopped after an earlier error: boom",
        "refused with the first reason");
  std::vector<Item> rest;
  CHECK(!w.take_all(rest) && rest.empty(), "nothing left queued");
  CHECK(w.stop() && !w.stop(), "stop without a thread, then idempotent");
  CHECK(refusal(w, "d", &refusals) == "stopped after an earlier error: boom",
        "poisoned wins over stopped");
}

void test_take_all_poke_and_wait() {
  Worker<Item> w("dlion-test");
  int refusals = 0;
  push(w, "a", &refusals);
  push(w, "b", &refusals);
  std::vector<Item> got;
  CHECK(!w.take_all(got) && got.size() == 2 && got[1].name == "b", "takes all, not stopping");
  w.poke();
  w.wait();  // returns at once: the poke is pending (a missed poke would hang the test)
  CHECK(w.wait_for(std::chrono::hours(1)), "the poke stays pending until take_all");
  got.clear();
  CHECK(!w.take_all(got) && got.empty(), "nothing queued");
  CHECK(!w.wait_for(std::chrono::milliseconds(1)), "take_all cleared the poke");
  // A push from another thread wakes a waiting thread.
  std::thread pusher([&] { push(w, "c", &refusals); });
  w.wait();
  pusher.join();
  CHECK(!w.take_all(got) && got.size() == 1 && got[0].name == "c", "the push woke the wait");
  w.stop();
  CHECK(w.take_all(got), "stopping");
  w.wait();  // returns at once once stopping
}

void test_stall_clock() {
  EngineConfig c;
  c.stall_warning_s = 2.0;
  c.stall_timeout_s = 5.5;
  const StallClock stall(c);
  const auto t0 = Clock::time_point{} + std::chrono::seconds(100);
  const auto at = [&](double s) {
    return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  auto next = stall.first_warning(t0);
  CHECK(next == at(2.0), "first warning after stall_warning_s");
  using Due = StallClock::Due;
  CHECK(stall.due(t0, next, at(1.9)) == Due::kNothing, "before the first warning");
  CHECK(stall.due(t0, next, at(2.0)) == Due::kWarning && next == at(4.0), "warning, then +2 s");
  CHECK(stall.due(t0, next, at(3.0)) == Due::kNothing, "one warning per interval");
  CHECK(stall.due(t0, next, at(4.5)) == Due::kWarning && next == at(6.0), "second warning");
  CHECK(stall.due(t0, next, at(5.4)) == Due::kNothing, "before the timeout");
  CHECK(stall.due(t0, next, at(5.5)) == Due::kTimeout, "timeout after stall_timeout_s");
  CHECK(stall.due(t0, next, at(9.0)) == Due::kTimeout, "the timeout wins over a warning");
  const std::string text = stall.timeout_text(3, "allreduce 'w' (op #7)", "rank 1");
  CHECK(text ==
            "rank 3: allreduce 'w' (op #7) did not complete within 5.5 s (stall_timeout_s): "
            "still waiting for rank 1",
        "%s", text.c_str());
}

}  // namespace

int main() {
  test_runs_in_order_and_stop_drains();
  test_poison_fails_queued_and_refuses();
  test_take_all_poke_and_wait();
  test_stall_clock();
  std::printf("worker_test: ok\n");
  return 0;
}
