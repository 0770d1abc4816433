// The progress loop: the only code that makes MPI calls on the engine's communicator.
//
// Protocol of one operation (every rank runs the same sequence of operations, in submit order):
//   1. Take the oldest queued operation; it gets the next sequence number, the same on every rank.
//   2. Negotiate (negotiate.h): exchange what each rank submitted; on disagreement fail the
//      handle with MismatchError on every rank and go on with the next operation. A small
//      allreduce (at most BlockSize::cap() bytes) moves its data in the same round, in a
//      fixed-size block beside the negotiation (small_allreduce.h, steps 1-5), and is then done.
//   3. Run the data algorithm: for large allreduces the site-aware hierarchical allreduce when
//      ranks span several sites (hierarchical_allreduce.h), else the pipelined ring; MPI
//      non-blocking collectives otherwise; a barrier is the negotiation alone. The rings pace
//      their sends on the emulated links (set_caps), if any.
//   4. Complete the handle (or fail it with the error, which the waiting caller rethrows).
// While an operation is in flight the loop polls it; when polls find nothing new it backs off
// (backoff.h): it yields between polls only while a transfer is moving or just after progress,
// else it sleeps between polls, for longer the longer the wait, so a wait for a peer that is
// still computing never spins a shared core. With nothing queued the thread sleeps on the
// condition variable and uses no CPU.
// Stalls: every stall_warning_s without completion, a warning on stderr names what the operation
// waits for (which ranks have not submitted it, or which neighbour has not sent); after
// stall_timeout_s it fails with PeerTimeout and the engine is poisoned: queued and later
// operations fail with EngineShutdown, because MPI state is no longer known to be consistent.
#include <algorithm>
#include <chrono>
#include <climits>
#include <memory>
#include <thread>

#include "common/error.h"
#include "engine/backoff.h"
#include "engine/collective.h"
#include "engine/engine.h"
#include "engine/hierarchical_allreduce.h"
#include "engine/negotiate.h"
#include "engine/ring_allreduce.h"
#include "engine/small_allreduce.h"
#include "engine/stall_clock.h"

namespace dlion {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kRingBaseTag = 64;

// ". Behind: rank 2 (site B) has started 40 ...", or empty when every rank reached `seq`.
std::string behind_text(const Liveness& liveness, std::uint64_t seq, Clock::time_point now) {
  const std::string b = liveness.behind(seq, now);
  return b.empty() ? b : ". Not yet at this operation: " + b;
}

// Drives one algorithm (of the operation number `seq`) to completion with backoff and stall
// handling. Throws PeerTimeout, or PeerLost as soon as `liveness` (may be null) knows that a
// rank is gone or shut down before this operation.
// The operation's description (`meta`) is only formatted for a warning or an error.
void drive(Algorithm& algo, const EngineConfig& config, int rank, Clock::time_point start,
           const OpMeta& meta, std::uint64_t seq, const Liveness* liveness) {
  const StallClock stall(config);
  auto next_warning = stall.first_warning(start);
  Backoff backoff(config, Clock::now());
  for (;;) {
    bool progressed = false;
    if (algo.poll(progressed)) return;
    const auto now = Clock::now();
    if (liveness) {
      const std::string lost = liveness->lost();
      if (!lost.empty())
        throw PeerLost(detail::concat(lost, "; this rank was waiting in ", describe(meta), " for ",
                                      algo.waiting_on()));
      const std::string gone = liveness->departed_before(seq);
      if (!gone.empty())
        throw PeerLost(detail::concat("rank ", rank, ": ", describe(meta),
                                      " can never complete: ", gone,
                                      " shut down dlion before reaching it. Every rank must run "
                                      "the same collective operations"));
    }
    if (progressed) {
      backoff.progressed(now);
      continue;
    }
    const StallClock::Due due = stall.due(start, next_warning, now);
    if (due == StallClock::Due::kTimeout) {
      throw PeerTimeout(detail::concat(
          stall.timeout_text(rank, describe(meta), algo.waiting_on()),
          ". A rank may have died, hung or taken another code path",
          liveness ? behind_text(*liveness, seq, now) : std::string()));
    }
    if (due == StallClock::Due::kWarning) {
      const std::string behind = liveness ? behind_text(*liveness, seq, now) : std::string();
      StallClock::warn(rank, start, now, describe(meta), algo.waiting_on() + behind);
    }
    const Clock::duration nap = backoff.next(now, algo.moving(), algo.release());
    if (nap == Clock::duration::zero())
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(nap);
  }
}

}  // namespace

void Engine::run() {
  for (;;) {
    Pending op;  // one per operation: nothing of it outlives its turn
    if (!worker_.next(op)) {  // stopping, and everything queued has run
      small_.reset();  // its MPI datatype and op, freed on this thread
      return;
    }
    execute(op);
  }
}

Link* Engine::pace(int peer) {
  Link& link = links_[static_cast<std::size_t>(peer)];
  return link.cap().bandwidth_Bps > 0.0 || link.cap().latency_s > 0.0 ? &link : nullptr;
}

std::unique_ptr<Algorithm> Engine::make_allreduce(const OpRequest& req,
                                                  std::uint64_t EngineStats::*& counter) {
  const std::size_t bytes = req.count * dtype_size(req.dtype);
  const bool large = bytes > config_.ring_threshold_bytes;
  SiteLayout sites;
  {
    std::lock_guard<std::mutex> lock(mu_);
    sites = sites_;
    if (caps_changed_) {  // emulated links: from this operation on
      links_.resize(caps_.size());
      for (std::size_t p = 0; p < caps_.size(); ++p) {
        const int w = caps_[p].wire;  // set_caps() checked it against clocks_
        links_[p].set_cap(caps_[p],
                          w >= 0 ? &clocks_->slot(static_cast<std::size_t>(w)) : nullptr);
      }
      caps_changed_ = false;
    }
  }
  const bool emulated = !links_.empty();
  if (config_.hierarchical && sites.useful && large && req.count >= sites.leaders.size() &&
      req.count <= static_cast<std::size_t>(INT_MAX)) {
    counter = &EngineStats::hierarchical_allreduces;
    Link* ring_pace = nullptr;
    if (emulated && sites.leader_index >= 0) {
      const std::size_t next = (static_cast<std::size_t>(sites.leader_index) + 1) %
                               sites.leaders.size();
      ring_pace = pace(sites.leaders[next]);
    }
    return std::make_unique<HierarchicalAllreduce>(comm_, rank_, size_, std::move(sites), req,
                                                   config_.ring_segment_bytes, scratch2_,
                                                   scratch_, ring_pace);
  }
  if (large && req.count >= static_cast<std::size_t>(size_)) {
    counter = &EngineStats::ring_allreduces;
    const double scale = req.reduce == ReduceOp::Average ? 1.0 / size_ : 1.0;
    Link* ring_pace = emulated ? pace((rank_ + 1) % size_) : nullptr;
    return std::make_unique<RingAllreduce>(comm_, RingAllreduce::all_ranks(size_), rank_, req,
                                           scale, config_.ring_segment_bytes, kRingBaseTag,
                                           scratch_, ring_pace);
  }
  return Collective::allreduce(comm_, req, size_);
}

void Engine::execute(Pending& op) {
  const auto start = Clock::now();
  const OpRequest& req = op.req;
  const std::uint64_t seq = op.handle->seq();
  const OpMeta meta = make_meta(seq, req);
  std::shared_ptr<Liveness> liveness;
  {
    std::lock_guard<std::mutex> lock(mu_);
    liveness = liveness_;
  }
  if (liveness) liveness->entered(seq + 1);
  std::unique_ptr<Algorithm> algo;
  std::uint64_t EngineStats::*counter = nullptr;  // which algorithm ran, for stats
  bool ok = false;
  try {
    std::unique_ptr<SmallAllreduce> block;  // small_allreduce.h
    {
      Negotiation negotiation(comm_, rank_, size_, meta);
      if (size_ > 1) {
        if (!small_) small_ = std::make_unique<SmallBlocks>(config_.ring_threshold_bytes);
        if (small_->size().fits(meta)) block = small_->post(comm_, &req, meta);  // step 1
      }
      if (block) {
        Overlap both(negotiation, *block);
        drive(both, config_, rank_, start, meta, seq, liveness.get());
      } else {
        drive(negotiation, config_, rank_, start, meta, seq, liveness.get());
      }
      if (size_ > 1) {
        const auto& metas = negotiation.metas();
        const bool any = std::any_of(metas.begin(), metas.end(),
                                     [this](const OpMeta& m) { return small_->size().fits(m); });
        if (any && !block) {  // step 2: another rank posted a block; take part in it
          block = small_->post(comm_, nullptr, meta);
          drive(*block, config_, rank_, start, meta, seq, liveness.get());
        }
        small_->size().learn(metas);  // step 3
      }
      negotiation.validate();  // step 4
      if (req.kind == OpKind::Allgather) {
        algo = Collective::allgather(comm_, req, negotiation.counts(), op.handle->output());
        op.handle->output_counts() = negotiation.counts();
      }
    }
    const bool data = size_ > 1 && req.count > 0;
    if (block) {  // step 5
      block->finish(req, size_);
      counter = &EngineStats::fused_allreduces;
    } else if (req.kind == OpKind::Allreduce && data) {
      algo = make_allreduce(req, counter);
    }
    if (req.kind == OpKind::Broadcast && data) algo = Collective::broadcast(comm_, req);
    if (algo) drive(*algo, config_, rank_, start, meta, seq, liveness.get());
    ok = true;
  } catch (const MismatchError&) {
    // Every rank saw the same metas and dropped the operation; nothing touched the buffer.
    op.handle->fail(std::current_exception(), false);
  } catch (const InvalidArgument&) {
    // Thrown by an algorithm's checks before it posts anything, alike on every rank (same
    // negotiated request, same settings): the operation is dropped everywhere.
    op.handle->fail(std::current_exception(), algo ? algo->abandon() : false);
  } catch (...) {
    const bool in_use = algo ? algo->abandon() : false;
    op.handle->fail(std::current_exception(), in_use);
    poison(describe_current_exception());
  }
  record(req, ok, counter, std::chrono::duration<double>(Clock::now() - start).count());
  if (ok) op.handle->complete();
}

void Engine::record(const OpRequest& req, bool ok, std::uint64_t EngineStats::*counter,
                    double busy_s) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.busy_seconds += busy_s;
  if (!ok) {
    ++stats_.ops_failed;
    return;
  }
  ++stats_.ops_completed;
  if (req.kind == OpKind::Allreduce) stats_.bytes_reduced += req.count * dtype_size(req.dtype);
  if (counter) ++(stats_.*counter);
}

}  // namespace dlion
