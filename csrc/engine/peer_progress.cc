// The peer engine's progress thread: the only code that makes MPI calls on its communicator.
//
// Each turn of the loop: take newly submitted requests and start them (encode and queue every
// link's message), make MPI progress (post the sends whose release time has come, test sends,
// match and receive arriving messages with MPI_Improbe/MPI_Imrecv, validate them, acknowledge
// them), finish the requests whose peers have all sent far enough, warn about or time out the
// ones that wait too long, then sleep:
//   * a request waits: poll again after a yield while a transfer is under way (MPI moves a
//     large message's data only inside our calls) or within 200 us (at most backoff_spin_us)
//     of the last progress, else after sleeps doubling up to backoff_max_us, up
//     to idle_poll_us once nothing happened for 20 ms (a far or slow peer), never past the
//     next paced release;
//   * messages queued, in flight or unacknowledged: until the next paced release, at most
//     backoff_max_us;
//   * links in use but nothing pending: every idle_poll_us for 0.25 s after the last traffic
//     (arriving messages are acknowledged promptly, which keeps link timing honest), then with
//     sleeps growing to 50 ms (an idle engine costs next to nothing);
//   * nothing registered: on the condition variable until work arrives.
// Every sleep is a wait on the condition variable, so a submit wakes the thread at once.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "compress/reduce.h"
#include "compress/residual.h"
#include "compress/xoshiro.h"
#include "engine/mpi_check.h"
#include "engine/peer_engine.h"

namespace dlion {

namespace {

constexpr int kProbeTag = 997;
constexpr int kAckTag = 998;
constexpr int kGroupTag = 1000;
constexpr std::uint32_t kProbeGroup = 0xFFFF0000u;  // + round: probe groups never clash
constexpr int kProbeRounds = 3;  // 0: rendezvous (untimed), 1: latency, 2: bandwidth
constexpr int kSpinUs = 200;     // longest yield-spin after progress (backoff_spin_us caps it)

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// The group field of a message that is at least a header long (validate() checks it again).
std::uint32_t raw_group(const wire::Message& m) {
  std::uint32_t g = 0;
  if (m.size() >= wire::kHeaderBytes) std::memcpy(&g, m.data() + 12, sizeof g);
  return g;
}

std::uint64_t seed_of(int rank, std::uint32_t group, std::uint64_t step, int peer) {
  std::uint64_t s = (static_cast<std::uint64_t>(rank) << 40) ^
                    (static_cast<std::uint64_t>(group) << 20) ^ static_cast<std::uint64_t>(peer);
  s ^= detail::splitmix64(s) + step;
  return detail::splitmix64(s);
}

}  // namespace

void PeerEngine::run() {
  auto idle_since = Clock::now();
  int sleeps = 0;
  try {
    for (;;) {
      std::vector<std::unique_ptr<Task>> fresh;
      bool stop = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        while (!queue_.empty()) {
          fresh.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        stop = stopping_;
        if (caps_changed_) {
          for (std::size_t p = 0; p < links_.size(); ++p) links_[p].set_cap(caps_[p]);
          caps_changed_ = false;
        }
      }
      auto now = Clock::now();
      bool progressed = !fresh.empty();
      for (auto& t : fresh) {
        tasks_.push_back(std::move(t));
        start(*tasks_.back(), now);
      }
      progressed |= service(now);
      now = Clock::now();
      beat(now);  // throws PeerLost once a peer has been silent for liveness_timeout_s
      for (std::size_t i = 0; i < tasks_.size();) {
        if (try_finish(*tasks_[i], now)) {
          tasks_.erase(tasks_.begin() + static_cast<std::ptrdiff_t>(i));
          progressed = true;
        } else {
          check_stall(*tasks_[i], now);
          ++i;
        }
      }
      if (progressed) {
        idle_since = now;
        sleeps = 0;
        last_traffic_ = now;
      }
      if (stop && tasks_.empty()) {
        drain(now + seconds(std::min(5.0, config_.stall_timeout_s)), true);
        return;
      }

      // Sleep (see the header comment).
      Clock::duration nap{};
      bool forever = false;
      if (!tasks_.empty()) {
        if (progressed) continue;
        // While a transfer is under way, MPI moves its data only inside our calls (large
        // messages go in chunks): poll after a yield, so the wait is not stretched by naps.
        const bool moving = data_in_flight() || !receiving_.empty();
        // Peers' messages come over links with latencies of milliseconds (else the exchange
        // runs as an allreduce): a short spin after progress is enough.
        const auto spin = std::chrono::microseconds(std::min(config_.backoff_spin_us, kSpinUs));
        if (moving || now - idle_since < spin) {
          std::this_thread::yield();
          continue;
        }
        // A wait that has seen nothing for 20 ms is a slow or far peer (a paced wide-area link,
        // a straggler): polling every idle_poll_us then costs little delay and little CPU.
        const bool long_wait = now - idle_since > std::chrono::milliseconds(20);
        const long cap = long_wait ? std::max(config_.backoff_max_us, config_.idle_poll_us)
                                   : config_.backoff_max_us;
        nap = std::chrono::microseconds(std::min<long>(1L << std::min(sleeps++, 20), cap));
        for (const Send& s : to_post_) nap = std::min(nap, s.release - now);
      } else if (!to_post_.empty() || data_in_flight() || !receiving_.empty() || !all_acked()) {
        nap = std::chrono::microseconds(config_.backoff_max_us);
        for (const Send& s : to_post_) nap = std::min(nap, s.release - now);
      } else if (probes_started_ > 0 || any_group()) {
        // Every idle_poll_us for 0.25 s after the last traffic (between the steps of a
        // training loop), then doubling up to 50 ms (an idle engine).
        const auto quiet = now - last_traffic_;
        nap = std::chrono::microseconds(config_.idle_poll_us);
        if (quiet > std::chrono::milliseconds(250))
          nap = std::min<Clock::duration>(quiet - std::chrono::milliseconds(250),
                                          std::chrono::milliseconds(50));
        nap = std::max<Clock::duration>(nap, std::chrono::microseconds(config_.idle_poll_us));
      } else {
        forever = true;
      }
      if (size_ > 1) {  // wake for the next heartbeat
        nap = forever ? until_beat(now) : std::min(nap, until_beat(now));
        forever = false;
      }
      std::unique_lock<std::mutex> lock(mu_);
      auto woken = [this] { return stopping_ || !queue_.empty() || caps_changed_; };
      if (forever)
        cv_.wait(lock, woken);
      else if (nap > Clock::duration::zero())
        cv_.wait_for(lock, nap, woken);
    }
  } catch (...) {
    fail_all(describe_current_exception());
  }
}

// ---------------------------------------------------------------------------------------------
// Starting requests.

PeerEngine::Group& PeerEngine::group(std::uint32_t id, std::size_t n) {
  Group& g = groups_[id];
  if (g.inbox.empty()) {
    g.n = n;
    g.inbox.resize(static_cast<std::size_t>(size_));
    g.latest.assign(static_cast<std::size_t>(size_), -1);
    g.residual.resize(static_cast<std::size_t>(size_));
  }
  if (!g.registered) {
    for (const auto& r : g.residual) {
      DLION_CHECK(r.empty() || r.size() == n, InvalidArgument, "rank ", rank_, ": group ", id,
                  " has ", n, " elements, but a residual of ", r.size(),
                  " was restored for it");
    }
    g.n = n;
    g.registered = true;
  }
  return g;
}

void PeerEngine::start(Task& task, Clock::time_point now) {
  task.started = now;
  task.next_warning = now + seconds(config_.stall_warning_s);
  if (task.is_probe) {
    ++probes_started_;
    task.round = 0;
    start_probe_round(task, now);
    return;
  }
  const ExchangeRequest& r = task.req;
  std::lock_guard<std::mutex> lock(groups_mu_);
  Group& g = group(r.group, r.n);
  DLION_CHECK(g.n == r.n, InvalidArgument, "rank ", rank_, ": peer exchange '", r.name,
              "' (group ", r.group, ", step ", r.step, ") has ", r.n,
              " elements, but the group was first exchanged with ", g.n);
  DLION_CHECK(static_cast<std::int64_t>(r.step) > g.last_step, InvalidArgument, "rank ", rank_,
              ": peer exchange '", r.name, "' (group ", r.group, "): step ", r.step,
              " after step ", g.last_step, "; steps must increase");
  g.last_step = static_cast<std::int64_t>(r.step);

  wire::Fields f;
  f.kind = wire::Kind::kGradient;
  f.sender = static_cast<std::uint32_t>(rank_);
  f.group = r.group;
  f.step = r.step;
  f.weight = r.weight;
  // Links without error feedback and with the same codec share one message.
  std::vector<std::pair<const wire::Codec*, std::shared_ptr<wire::Message>>> shared;
  const int tag = kGroupTag + static_cast<int>(r.group);
  for (int i = 1; i < size_; ++i) {
    const int p = (rank_ + i) % size_;
    const LinkPlan& plan = r.links[static_cast<std::size_t>(p)];
    if (!plan.send) continue;
    std::shared_ptr<wire::Message> msg;
    const std::uint64_t seed = seed_of(rank_, r.group, r.step, p);
    std::vector<float>& res = g.residual[static_cast<std::size_t>(p)];
    const bool lossless = plan.codec.encoding == wire::Encoding::kDenseF32;
    if (plan.error_feedback && !(lossless && res.empty())) {
      if (res.empty()) res.assign(r.n, 0.0f);
      ef_compensate(res.data(), r.grad, r.n);
      auto m = std::make_shared<wire::Message>(wire::encode(
          res.data(), r.n, plan.codec, f, seed, r.reference, take(wire::kHeaderBytes)));
      if (lossless) {
        // Dense float32 carries the residual exactly: it is empty afterwards.
        std::vector<float>().swap(res);
      } else {
        const wire::Decoded sent = wire::validate(m->data(), m->size(), rank_, r.group, r.n);
        wire::apply_add(sent, res.data(), r.n, -1.0f);  // residual -= what the link carries
      }
      msg = std::move(m);
    } else {
      for (const auto& [codec, m] : shared) {
        if (codec->encoding == plan.codec.encoding && codec->k == plan.codec.k &&
            codec->bits == plan.codec.bits && codec->bucket == plan.codec.bucket &&
            codec->select == plan.codec.select && codec->threshold == plan.codec.threshold &&
            codec->offset == plan.codec.offset)
          msg = m;
      }
      if (!msg) {
        msg = std::make_shared<wire::Message>(wire::encode(
            r.grad, r.n, plan.codec, f, seed, r.reference, take(wire::kHeaderBytes)));
        shared.emplace_back(&plan.codec, msg);
      }
    }
    std::uint64_t k = 0;
    std::memcpy(&k, msg->data() + 40, sizeof k);
    {
      std::lock_guard<std::mutex> slock(mu_);
      stats_[static_cast<std::size_t>(p)].last_k = k;
    }
    enqueue(p, tag, std::move(msg), r.group, r.step, true, now);
  }
}

void PeerEngine::start_probe_round(Task& task, Clock::time_point now) {
  const std::uint32_t g = kProbeGroup + static_cast<std::uint32_t>(task.round);
  std::shared_ptr<wire::Message> msg;
  if (task.round == 2 && config_.probe_bytes > 0) {
    const std::size_t n = config_.probe_bytes / 4;
    std::vector<float> zeros(n, 0.0f);
    wire::Fields f;
    f.kind = wire::Kind::kProbe, f.sender = static_cast<std::uint32_t>(rank_), f.group = g;
    f.step = probes_started_;
    msg = std::make_shared<wire::Message>(wire::encode(zeros.data(), n, wire::Codec{}, f, 0));
  } else {
    msg = std::make_shared<wire::Message>(
        wire::encode_empty(wire::Kind::kProbe, static_cast<std::uint32_t>(rank_), g,
                           probes_started_));
  }
  for (int i = 1; i < size_; ++i) {
    const int p = (rank_ + i) % size_;
    enqueue(p, kProbeTag, msg, g, probes_started_, task.round > 0, now);
  }
}

void PeerEngine::enqueue(int peer, int tag, std::shared_ptr<wire::Message> msg,
                         std::uint32_t group, std::uint64_t step, bool timed,
                         Clock::time_point now) {
  Link& link = links_[static_cast<std::size_t>(peer)];
  const Link::Slot slot = link.schedule(msg->size(), now);
  if (tag != kAckTag) link.sent(group, step, msg->size(), slot.start, timed);
  Send s;
  s.peer = peer, s.tag = tag, s.msg = std::move(msg), s.release = slot.release;
  s.gradient = tag >= kGroupTag;
  {
    // Counted when queued on the link, so a step's messages count in that step even while
    // pacing still holds them.
    std::lock_guard<std::mutex> lock(mu_);
    LinkStats& st = stats_[static_cast<std::size_t>(peer)];
    if (s.gradient) {
      st.bytes_sent += s.msg->size();
      ++st.messages_sent;
    } else {
      st.control_bytes_sent += s.msg->size();
    }
  }
  to_post_.push_back(std::move(s));
}

bool PeerEngine::all_acked() const {
  return std::all_of(links_.begin(), links_.end(),
                     [](const Link& l) { return l.unacked() == 0; });
}

bool PeerEngine::any_group() const {
  std::lock_guard<std::mutex> lock(groups_mu_);  // set_residual() may add one meanwhile
  return !groups_.empty();
}

wire::Message PeerEngine::take(std::size_t len) {
  // The smallest pooled storage that fits, else the largest one (it grows once), else fresh.
  auto best = pool_.end();
  for (auto it = pool_.begin(); it != pool_.end(); ++it) {
    if (best == pool_.end()) {
      best = it;
    } else if (it->capacity() >= len) {
      if (best->capacity() < len || it->capacity() < best->capacity()) best = it;
    } else if (best->capacity() < len && it->capacity() > best->capacity()) {
      best = it;
    }
  }
  wire::Message m;
  if (best != pool_.end()) {
    m = std::move(*best);
    pool_.erase(best);
  }
  m.reset(len);
  return m;
}

void PeerEngine::give(wire::Message&& msg) {
  // Keep what one step needs (a message out and one in per link, of every group in flight:
  // about 2 per peer) and only buffers worth keeping; the rest goes back to the allocator.
  constexpr std::size_t kSmall = 64 * 1024;
  const std::size_t keep = 2 * static_cast<std::size_t>(size_) + 2;
  if (msg.capacity() < kSmall) return;
  if (pool_.size() >= keep) {
    auto smallest = std::min_element(pool_.begin(), pool_.end(), [](const auto& a, const auto& b) {
      return a.capacity() < b.capacity();
    });
    if (smallest->capacity() >= msg.capacity()) return;
    *smallest = std::move(msg);
    return;
  }
  pool_.push_back(std::move(msg));
}

// ---------------------------------------------------------------------------------------------
// MPI progress.

bool PeerEngine::service(Clock::time_point now) {
  bool progressed = false;
  post_due_sends(now, progressed);
  test_sends(progressed);
  match_incoming(progressed);
  test_receives(now, progressed);
  return progressed;
}

void PeerEngine::post_due_sends(Clock::time_point now, bool& progressed) {
  for (auto it = to_post_.begin(); it != to_post_.end();) {
    if (it->release > now) {
      ++it;
      continue;
    }
    Send s = std::move(*it);
    it = to_post_.erase(it);
    DLION_MPI(MPI_Isend(s.msg->data(), static_cast<int>(s.msg->size()), MPI_BYTE, s.peer, s.tag,
                        comm_, &s.req));
    in_flight_.push_back(std::move(s));
    progressed = true;
  }
}

void PeerEngine::test_sends(bool& progressed) {
  for (std::size_t i = 0; i < in_flight_.size();) {
    int done = 0;
    DLION_MPI(MPI_Test(&in_flight_[i].req, &done, MPI_STATUS_IGNORE));
    if (done) {
      if (in_flight_[i].tag == kHeartbeatTag)
        beat_in_flight_[static_cast<std::size_t>(in_flight_[i].peer)] = 0;
      if (in_flight_[i].msg.use_count() == 1) give(std::move(*in_flight_[i].msg));
      in_flight_[i] = std::move(in_flight_.back());
      in_flight_.pop_back();
      progressed = true;
    } else {
      ++i;
    }
  }
}

void PeerEngine::match_incoming(bool& progressed) {
  std::vector<int> tags = {kHeartbeatTag, kAckTag, kProbeTag};
  {
    std::lock_guard<std::mutex> lock(groups_mu_);
    for (const auto& [id, g] : groups_)
      if (g.registered) tags.push_back(kGroupTag + static_cast<int>(id));
  }
  for (int tag : tags) {
    for (int matched = 0; matched < 64; ++matched) {
      int flag = 0;
      MPI_Message handle = MPI_MESSAGE_NULL;
      MPI_Status status;
      DLION_MPI(MPI_Improbe(MPI_ANY_SOURCE, tag, comm_, &flag, &handle, &status));
      if (!flag) break;
      int count = 0;
      DLION_MPI(MPI_Get_count(&status, MPI_BYTE, &count));
      Recv r;
      r.peer = status.MPI_SOURCE, r.tag = tag;
      r.msg = take(static_cast<std::size_t>(count));
      DLION_MPI(MPI_Imrecv(r.msg.data(), count, MPI_BYTE, &handle, &r.req));
      receiving_.push_back(std::move(r));
      progressed = true;
    }
  }
}

void PeerEngine::test_receives(Clock::time_point now, bool& progressed) {
  for (std::size_t i = 0; i < receiving_.size();) {
    int done = 0;
    DLION_MPI(MPI_Test(&receiving_[i].req, &done, MPI_STATUS_IGNORE));
    if (!done) {
      ++i;
      continue;
    }
    Recv r = std::move(receiving_[i]);
    receiving_.erase(receiving_.begin() + static_cast<std::ptrdiff_t>(i));
    on_message(r.peer, r.tag, std::move(r.msg), now);
    progressed = true;
  }
}

void PeerEngine::on_message(int peer, int tag, wire::Message msg, Clock::time_point now) {
  const std::size_t p = static_cast<std::size_t>(peer);
  const std::size_t bytes = msg.size();
  auto ack = [&](std::uint32_t group, std::uint64_t step) {
    enqueue(peer, kAckTag,
            std::make_shared<wire::Message>(wire::encode_empty(
                wire::Kind::kAck, static_cast<std::uint32_t>(rank_), group, step)),
            group, step, false, now);
  };
  auto expect_kind = [&](const wire::Decoded& d, wire::Kind kind, const char* what) {
    if (d.header().kind != static_cast<std::uint16_t>(kind))
      throw ProtocolError(detail::concat("rank ", rank_, ": message from rank ", peer, " on the ",
                                         what, " channel has kind ", d.header().kind,
                                         ", expected ", static_cast<int>(kind)));
  };
  liveness_->heard(peer, now);
  if (tag == kHeartbeatTag) {
    const std::uint32_t g = raw_group(msg);
    const wire::Decoded d = wire::validate(msg.data(), bytes, peer, g <= 1 ? g : 0, 0);
    expect_kind(d, wire::Kind::kHeartbeat, "heartbeat");
    on_heartbeat(peer, d, now);
    return;
  }
  if (tag == kAckTag) {
    const wire::Decoded d = wire::validate(msg.data(), bytes, peer, raw_group(msg), 0);
    expect_kind(d, wire::Kind::kAck, "acknowledgement");
    std::lock_guard<std::mutex> lock(mu_);
    if (!links_[p].acked(d.header().group, d.header().step, now, stats_[p]))
      throw ProtocolError(detail::concat("rank ", rank_, ": rank ", peer,
                                         " acknowledged a message this rank never sent (group ",
                                         d.header().group, ", step ", d.header().step, ")"));
    return;
  }
  if (tag == kProbeTag) {
    const std::uint32_t g = raw_group(msg);
    const std::uint32_t round = g - kProbeGroup;
    const std::uint64_t n = round == 2 ? config_.probe_bytes / 4 : 0;
    const wire::Decoded d =
        wire::validate(msg.data(), bytes, peer, round < kProbeRounds ? g : kProbeGroup, n);
    expect_kind(d, wire::Kind::kProbe, "probe");
    ++probes_seen_[round][p];
    ack(g, d.header().step);
    return;
  }
  const auto id = static_cast<std::uint32_t>(tag - kGroupTag);
  std::uint64_t acked_step = 0;
  {
    std::lock_guard<std::mutex> lock(groups_mu_);
    Group& g = groups_.at(id);
    const wire::Decoded d = wire::validate(msg.data(), bytes, peer, id, g.n);
    expect_kind(d, wire::Kind::kGradient, "gradient");
    const auto step = static_cast<std::int64_t>(d.header().step);
    if (step <= g.latest[p])
      throw ProtocolError(detail::concat("rank ", rank_, ": rank ", peer, " sent step ", step,
                                         " of group ", id, " after step ", g.latest[p],
                                         "; a peer's steps must increase (a repeated message "
                                         "would be applied twice), so it was not applied"));
    g.latest[p] = step;
    acked_step = d.header().step;
    g.inbox[p].push_back(Arrived{d.header().step, std::move(msg), d});
    std::lock_guard<std::mutex> slock(mu_);
    LinkStats& st = stats_[p];
    st.bytes_received += bytes;
    ++st.messages_received;
    st.last_step_received = std::max(st.last_step_received, step);
  }
  ack(id, acked_step);
}

// ---------------------------------------------------------------------------------------------
// Finishing, stalls, failures.

bool PeerEngine::try_finish(Task& task, Clock::time_point now) {
  if (task.is_probe) {
    for (;;) {
      const std::uint32_t g = kProbeGroup + static_cast<std::uint32_t>(task.round);
      for (int p = 0; p < size_; ++p) {
        if (p == rank_) continue;
        const auto pp = static_cast<std::size_t>(p);
        if (links_[pp].awaiting(g) || probes_seen_[static_cast<std::size_t>(task.round)][pp] <
                                          probes_started_)
          return false;
      }
      if (++task.round == kProbeRounds) break;
      start_probe_round(task, now);
    }
    task.handle->complete();
    return true;
  }
  const ExchangeRequest& r = task.req;
  std::lock_guard<std::mutex> lock(groups_mu_);
  Group& g = groups_.at(r.group);
  const std::int64_t step = static_cast<std::int64_t>(r.step);
  const std::int64_t need = r.sync ? step : step - r.staleness;
  for (int p = 0; p < size_; ++p)
    if (p != rank_ && expects(r, p) && g.latest[static_cast<std::size_t>(p)] < need) return false;

  // Weighted sum in rank order, so that ranks holding the same messages get the same bits.
  g.acc.assign(r.n, 0.0f);
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) {
      add_scaled(g.acc.data(), r.grad, r.n, r.weight);
      continue;
    }
    auto& box = g.inbox[static_cast<std::size_t>(p)];
    while (!box.empty() && static_cast<std::int64_t>(box.front().step) <= step) {
      const Arrived& a = box.front();
      wire::apply_add(a.dec, g.acc.data(), r.n, a.dec.weight());
      const std::int64_t lag = step - static_cast<std::int64_t>(a.step);
      {
        std::lock_guard<std::mutex> slock(mu_);
        LinkStats& st = stats_[static_cast<std::size_t>(p)];
        st.staleness_last = lag;
        st.staleness_max = std::max(st.staleness_max, lag);
      }
      give(std::move(box.front().msg));
      box.pop_front();
    }
  }
  if (r.n > 0) std::memcpy(r.out, g.acc.data(), r.n * sizeof(float));
  task.handle->complete();
  return true;
}

std::string PeerEngine::missing(const Task& task) const {
  std::string out;
  if (task.is_probe) {
    const std::uint32_t g = kProbeGroup + static_cast<std::uint32_t>(task.round);
    for (int p = 0; p < size_; ++p) {
      const auto pp = static_cast<std::size_t>(p);
      if (p != rank_ && (links_[pp].awaiting(g) ||
                         probes_seen_[static_cast<std::size_t>(task.round)][pp] < probes_started_))
        out += detail::concat(out.empty() ? "" : ", ", "rank ", p);
    }
    return out + " (link probe round " + std::to_string(task.round) + ")";
  }
  const ExchangeRequest& r = task.req;
  std::lock_guard<std::mutex> lock(groups_mu_);
  const Group& g = groups_.at(r.group);
  const std::int64_t step = static_cast<std::int64_t>(r.step);
  const std::int64_t need = r.sync ? step : step - r.staleness;
  for (int p = 0; p < size_; ++p) {
    const std::int64_t got = g.latest[static_cast<std::size_t>(p)];
    if (p == rank_ || got >= need || !expects(r, p)) continue;
    out += detail::concat(out.empty() ? "" : ", ", "rank ", p, " (",
                          got < 0 ? std::string("nothing received yet")
                                  : "last sent step " + std::to_string(got),
                          ")");
  }
  return detail::concat(out, " to send step ", need, " of group ", r.group);
}

void PeerEngine::check_stall(Task& task, Clock::time_point now) {
  const std::string what =
      task.is_probe ? std::string("link probe")
                    : detail::concat("peer exchange '", task.req.name, "' (group ",
                                     task.req.group, ", step ", task.req.step, ")");
  if (!task.is_probe) {
    // A peer that said goodbye (shut down) will never send what this task waits for.
    std::string gone;
    {
      std::lock_guard<std::mutex> lock(groups_mu_);
      const Group& g = groups_.at(task.req.group);
      const auto step = static_cast<std::int64_t>(task.req.step);
      const std::int64_t need = task.req.sync ? step : step - task.req.staleness;
      for (int p = 0; p < size_; ++p)
        if (p != rank_ && expects(task.req, p) && g.latest[static_cast<std::size_t>(p)] < need &&
            liveness_->left(p))
          gone += detail::concat(gone.empty() ? "" : ", ", liveness_->who(p));
    }
    if (!gone.empty())
      throw PeerLost(detail::concat("rank ", rank_, ": ", what, " can never complete: ", gone,
                                    " shut down dlion before sending what it waits for (",
                                    missing(task), ")"));
  }
  if (now - task.started >= seconds(config_.stall_timeout_s)) {
    throw PeerTimeout(detail::concat(
        "rank ", rank_, ": ", what, " did not complete within ", config_.stall_timeout_s,
        " s (stall_timeout_s): still waiting for ", missing(task),
        ". A rank may have died, hung or stopped exchanging"));
  }
  if (now >= task.next_warning) {
    const double waited = std::chrono::duration<double>(now - task.started).count();
    std::fprintf(stderr, "[dlion rank %d] WARNING: stalled %.0f s on %s: waiting for %s\n", rank_,
                 waited, what.c_str(), missing(task).c_str());
    std::fflush(stderr);
    task.next_warning += seconds(config_.stall_warning_s);
  }
}

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
  std::deque<std::unique_ptr<Task>> queued;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (poisoned_.empty()) poisoned_ = why;
    queued.swap(queue_);
  }
  // Called from run()'s handler: the current exception is the error each started task gets.
  std::exception_ptr error = std::current_exception();
  if (!error) error = std::make_exception_ptr(EngineShutdown(why));
  for (auto& t : tasks_) t->handle->fail(error, false);
  for (auto& t : queued)
    t->handle->fail(std::make_exception_ptr(EngineShutdown(detail::concat(
                        "rank ", rank_, ": '", t->req.name,
                        "' was not run because an earlier peer exchange failed: ", why))),
                    false);
  tasks_.clear();
  try {
    drain(Clock::now());
  } catch (...) {
  }
}

}  // namespace dlion
