// The end of the peer engine's thread: draining its links (a clean stop, bounded) and, after
// an error, failing every started and queued request.
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/error.h"
#include "engine/peer_engine.h"

namespace dlion {

void PeerEngine::drain(Clock::time_point until, bool goodbye) {
  // Hand every queued message (acknowledgements, mostly) to MPI, let the sends finish, and wait
  // until every message this rank sent was acknowledged (go on receiving and acknowledging
  // meanwhile), for a bounded time: peers that already stopped never answer, and we do not
  // wait for them. Only then is nothing left in flight towards this rank, so freeing the
  // communicator cannot leave a message that a later communicator (MPI reuses context ids)
  // would receive.
  // With `goodbye` (a clean stop), the final heartbeat goes out once everything this rank sent
  // was acknowledged, i.e. its peers hold every message of it (a peer that sees the goodbye
  // first would conclude that what it waits for never comes); then every peer's final
  // heartbeat is awaited too, so that no heartbeat is left in flight either.
  for (;;) {
    const auto now = Clock::now();
    bool progressed = false;
    post_due_sends(now, progressed);
    test_sends(progressed);
    match_incoming(progressed);
    test_receives(now, progressed);
    const bool sent = to_post_.empty() && !data_in_flight() && all_acked();
    if (goodbye && (sent || now >= until) && !said_goodbye()) say_goodbye(now);
    if ((sent && in_flight_.empty() && receiving_.empty() &&
         (!goodbye || liveness_->all_left())) ||
        now >= until)
      break;
    std::this_thread::sleep_for(std::chrono::microseconds(config_.backoff_max_us));
  }
  // Whatever is still in flight is released; MPI may still read those buffers, so they are
  // kept until the process ends.
  static std::mutex leak_mu;
  static std::vector<std::shared_ptr<wire::Message>> leaked;
  std::lock_guard<std::mutex> lock(leak_mu);
  for (Send& s : in_flight_) {
    MPI_Request_free(&s.req);
    leaked.push_back(s.msg);
  }
  in_flight_.clear();
  for (Recv& r : receiving_) {
    MPI_Cancel(&r.req);
    MPI_Request_free(&r.req);
    leaked.push_back(std::make_shared<wire::Message>(std::move(r.msg)));
  }
  receiving_.clear();
  to_post_.clear();
}

void PeerEngine::fail_all(const std::string& why) {
  // Called from run()'s handler: the current exception is the error each started task gets.
  std::exception_ptr error = std::current_exception();
  if (!error) error = std::make_exception_ptr(EngineShutdown(why));
  worker_.poison(why, [&](std::unique_ptr<Task>& t) {
    t->handle->fail(std::make_exception_ptr(EngineShutdown(detail::concat(
                        "rank ", rank_, ": '", t->req.name,
                        "' was not run because an earlier peer exchange failed: ", why))),
                    false);
  });
  for (auto& t : tasks_) t->handle->fail(error, false);
  tasks_.clear();
  try {
    drain(Clock::now());
  } catch (...) {
  }
}

}  // namespace dlion
