// PeerEngine: asynchronous per-link peer exchange (DESIGN.md sections 2, 5, 6). Every rank
// sends each peer its own message per step and tensor group, encoded for that link (dense,
// top-k, quantized, ...; compressed here, with a per-link error-feedback residual), and
// combines what its peers sent into a weighted aggregate.
//
// Like Engine, it owns a duplicate of the caller's communicator and one progress thread that
// makes every MPI call on it (the thread, its queue and the poisoned state are a Worker,
// worker.h, as in Engine); callers submit() requests and wait on Handles. It is a separate
// engine (own communicator, own thread) because its traffic is not a sequence of collectives:
// peers' messages arrive whenever they were sent, and must be received, acknowledged and timed
// while the collective engine runs something else or nothing at all.
//
// One exchange (group g, step t) on rank i:
//   1. for every peer p: x = grad (or residual[g][p] += grad with error feedback); encode x with
//      the link's codec into one wire message (format.h) with i's weight; with error feedback
//      residual[g][p] -= decode(message); queue it on link p (paced when the link is emulated).
//      Links with the same codec share one message, encoded once: without error feedback, and
//      with it while their residuals are one (Group::residual);
//   2. wait until every peer p has sent some step >= t - staleness (sync: >= t);
//   3. out = sum over ranks r in rank order of: w_i * grad (r == i), or, for r = p, every
//      message of p not yet applied with step <= t, each times its own weight. Every message is
//      applied exactly once; messages of later steps wait for the step they belong to.
// Messages travel on tag kGroupTag + g, so a group's messages are only received once this rank
// has registered the group (its first exchange); a peer's steps must strictly increase (else
// ProtocolError: a repeated message would be applied twice). Every message is acknowledged at
// once (Kind::kAck on kAckTag), which times the link (link.h).
//
// Failures: a message that fails validation, an MPI error or a wait longer than
// stall_timeout_s fails the request and poisons the engine (later requests: EngineShutdown).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/config.h"
#include "engine/handle.h"
#include "engine/link.h"
#include "engine/liveness.h"
#include "engine/site_clocks.h"
#include "engine/stall_clock.h"
#include "engine/worker.h"
#include "wire/encode.h"

namespace dlion {

// What one link carries per step.
struct LinkPlan {
  wire::Codec codec;
  bool error_feedback = false;  // keep what the codec dropped in this link's residual
  bool send = true;             // false: this link carries nothing for this group and step
};

struct ExchangeRequest {
  std::uint32_t group = 0;  // tensor group; < kMaxGroups
  std::uint64_t step = 0;   // strictly increasing per group
  const float* grad = nullptr;  // read until the handle completes
  float* out = nullptr;         // written when it completes; may be grad
  const float* reference = nullptr;  // n elements for threshold selection (else unused)
  std::size_t n = 0;            // elements; fixed per group
  float weight = 1.0f;          // this rank's aggregation weight (finite, >= 0)
  std::vector<LinkPlan> links;  // one per rank; this rank's own entry is ignored
  // The peers whose message of this step the exchange waits for and applies (one flag per
  // rank, own entry ignored); empty: every peer. The site-aware exchange sends each shard to
  // one counterpart per site and hears only from the ranks whose shards it holds.
  std::vector<char> expect;
  int staleness = 0;            // >= 0
  bool sync = false;            // wait for every peer's step (as staleness 0)
  std::string name;             // for errors and stall warnings
};

class PeerEngine {
 public:
  static constexpr std::uint32_t kMaxGroups = 16384;
  static constexpr int kHeartbeatTag = 996;  // below the probe (997), ack (998), group tags

  // Duplicates comm (collective; PeerTimeout after stall_timeout_s). Needs MPI_THREAD_MULTIPLE.
  PeerEngine(MPI_Comm comm, const EngineConfig& config);
  ~PeerEngine();
  PeerEngine(const PeerEngine&) = delete;
  PeerEngine& operator=(const PeerEngine&) = delete;

  // Checks the request (InvalidArgument) and queues it.
  HandlePtr exchange(ExchangeRequest req);
  // Measures every link (latency from small messages, bandwidth from config.probe_bytes);
  // collective: every rank calls it. Also a rendezvous: it completes once every peer probed.
  HandlePtr probe();
  // Emulated caps, one per rank (own entry ignored); applies to messages queued afterwards.
  // A cap with wire >= 0 is paced on that clock of the table share_wires() gave.
  void set_caps(const std::vector<LinkCap>& caps);
  // The clocks of the emulated links that several rank pairs share (one per site pair; the
  // runtime maps one table per host, site_clocks.h); kept as long as the engine. Once.
  void share_wires(std::shared_ptr<SiteClocks> clocks);

  std::vector<LinkStats> link_stats() const;  // one per rank; own entry all zero
  // A copy of link (group, peer)'s residual; empty if it has none. For checkpoints: call it
  // while no exchange is in flight.
  std::vector<float> residual(std::uint32_t group, int peer) const;
  // Replaces it (n elements of the group; the group need not be registered yet).
  void set_residual(std::uint32_t group, int peer, std::vector<float> values);

  // Which ranks are alive, from the heartbeats this engine's thread sends and receives
  // (liveness.h); shared with the collective engine (Engine::set_liveness).
  std::shared_ptr<Liveness> liveness() const { return liveness_; }

  // Lets queued exchanges finish, sends what is queued (bounded), says goodbye to every peer
  // (a final heartbeat, answered by theirs: bounded), stops the thread. Idempotent.
  void shutdown();
  std::string poisoned() const;
  // CPU seconds used so far by the progress thread (sub-microsecond resolution).
  double thread_cpu_seconds() const { return worker_.cpu_seconds(); }
  int rank() const { return rank_; }
  int size() const { return size_; }
  const EngineConfig& config() const { return config_; }

 private:
  // A validated message waiting to be applied (dec points into msg's storage).
  struct Arrived {
    std::uint64_t step;
    wire::Message msg;
    wire::Decoded dec;
  };
  struct Group {
    std::size_t n = 0;
    bool registered = false;                     // its first exchange has started
    std::vector<std::deque<Arrived>> inbox;      // per peer, in arrival (= step) order
    std::vector<std::int64_t> latest;            // per peer: newest step received, -1: none
    // Per peer; null (or empty) until used. Links whose residuals are known equal (error feedback
    // with the same plans since they started, or restored so) share one: they carry one message,
    // encoded once (peer_start.cc); a link whose plan differs gets its own copy first.
    std::vector<std::shared_ptr<std::vector<float>>> residual;
    wire::Message acc;  // the sum of the earlier ranks' terms (float32), as it is built
    std::int64_t last_step = -1;                 // newest step exchanged by this rank
  };
  struct Task {
    bool is_probe = false;
    ExchangeRequest req;
    HandlePtr handle;
    Clock::time_point started{}, next_warning{};  // stall_'s schedule (peer_stall.cc)
    int round = -1;  // probe: the round in progress
  };
  struct Send {
    int peer = 0;
    int tag = 0;
    std::shared_ptr<wire::Message> msg;
    bool gradient = false;  // counted in the link's bytes_sent (probes and acks are not)
    Clock::time_point release{};
    MPI_Request req = MPI_REQUEST_NULL;
  };
  struct Recv {
    int peer = 0;
    int tag = 0;
    wire::Message msg;
    MPI_Request req = MPI_REQUEST_NULL;
  };

  // The progress thread (its files: peer_wire.h). peer_progress.cc: the loop.
  void run();
  // peer_start.cc: starting requests.
  void start(Task& task, Clock::time_point now);
  void start_probe_round(Task& task, Clock::time_point now);
  Group& group(std::uint32_t id, std::size_t n);
  // The links of r with error feedback and this codec whose residual is res (shared storage).
  long sharers(const Group& g, const ExchangeRequest& r, const std::vector<float>* res,
               const wire::Codec& codec) const;
  // peer_mpi.cc: MPI progress and message storage.
  bool service(Clock::time_point now);  // MPI progress; true when anything happened
  void post_due_sends(Clock::time_point now, bool& progressed);
  void test_sends(bool& progressed);
  void match_incoming(bool& progressed);
  void test_receives(Clock::time_point now, bool& progressed);
  void enqueue(int peer, int tag, std::shared_ptr<wire::Message> msg, std::uint32_t group,
               std::uint64_t step, bool timed, Clock::time_point now);
  bool all_acked() const;   // every message this rank sent was acknowledged
  bool any_group() const;   // some tensor group exists (locks groups_mu_)
  wire::Message take(std::size_t len);  // storage from the pool (or fresh)
  void give(wire::Message&& msg);       // back to the pool (bounded)
  // peer_receive.cc: an arrived message.
  void on_message(int peer, int tag, wire::Message msg, Clock::time_point now);
  // peer_finish.cc: completing a request.
  bool try_finish(Task& task, Clock::time_point now);
  // peer_stall.cc: what a request waits for.
  void check_stall(Task& task, Clock::time_point now);
  std::string missing(const Task& task) const;
  static bool expects(const ExchangeRequest& r, int peer) {
    return r.expect.empty() || r.expect[static_cast<std::size_t>(peer)] != 0;
  }
  // peer_drain.cc: the end of the thread.
  void drain(Clock::time_point until, bool goodbye = false);
  void fail_all(const std::string& why);
  // peer_heartbeat.cc: liveness.
  void beat(Clock::time_point now);  // heartbeats when due; throws PeerLost for a lost peer
  void send_heartbeat(int peer, bool final, Clock::time_point now);
  void on_heartbeat(int peer, const wire::Decoded& d, Clock::time_point now);
  void say_goodbye(Clock::time_point now);  // the final heartbeat to every peer
  Clock::duration until_beat(Clock::time_point now) const;
  bool said_goodbye() const;     // our final heartbeat went to every peer
  bool data_in_flight() const;   // some send other than a heartbeat is in flight

  EngineConfig config_;
  StallClock stall_{config_};  // the warning and timeout schedule of a waiting request
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;

  mutable std::mutex mu_;  // guards the fields below up to clocks_ (the queue is the worker's)
  std::vector<LinkStats> stats_;
  std::vector<LinkCap> caps_;
  bool caps_changed_ = false;           // set_caps() pokes the worker
  std::shared_ptr<SiteClocks> clocks_;  // the shared wires caps_ name

  mutable std::mutex groups_mu_;  // the progress thread holds it while it touches groups_
  std::map<std::uint32_t, Group> groups_;

  // Progress thread only.
  std::vector<std::unique_ptr<Task>> tasks_;  // started, not finished
  std::vector<Link> links_;
  std::deque<Send> to_post_;
  std::vector<Send> in_flight_;
  std::vector<Recv> receiving_;
  std::vector<wire::Message> pool_;  // storage of finished messages, for reuse
  std::vector<std::vector<std::uint64_t>> probes_seen_;  // [round][peer]
  std::uint64_t probes_started_ = 0;
  Clock::time_point last_traffic_{};
  std::shared_ptr<Liveness> liveness_;  // created by the constructor; thread-safe
  Clock::time_point next_beat_{};
  std::vector<char> beat_in_flight_;  // per peer: a heartbeat send not yet complete
  std::vector<char> final_sent_;      // per peer: our last heartbeat went out

  Worker<std::unique_ptr<Task>> worker_{"dlion-peers"};  // last: its thread stops first
};

}  // namespace dlion
