// Starting the peer engine's requests (step 1 of peer_engine.h): a tensor group registered on
// its first exchange, every link's message encoded (with error feedback: from the link's
// residual, which then keeps what the codec dropped) and queued on its link; a probe's rounds.
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "common/error.h"
#include "compress/residual.h"
#include "compress/xoshiro.h"
#include "engine/peer_engine.h"
#include "engine/peer_wire.h"

namespace dlion {

using namespace peer;

namespace {

std::uint64_t seed_of(int rank, std::uint32_t group, std::uint64_t step, int peer) {
  std::uint64_t s = (static_cast<std::uint64_t>(rank) << 40) ^
                    (static_cast<std::uint64_t>(group) << 20) ^ static_cast<std::uint64_t>(peer);
  s ^= detail::splitmix64(s) + step;
  return detail::splitmix64(s);
}

bool same_codec(const wire::Codec& a, const wire::Codec& b) {
  return a.encoding == b.encoding && a.k == b.k && a.bits == b.bits && a.bucket == b.bucket &&
         a.select == b.select && a.threshold == b.threshold && a.offset == b.offset;
}

}  // namespace

long PeerEngine::sharers(const Group& g, const ExchangeRequest& r,
                         const std::vector<float>* res, const wire::Codec& codec) const {
  long count = 0;
  for (int p = 0; p < size_; ++p) {
    const LinkPlan& plan = r.links[static_cast<std::size_t>(p)];
    count += p != rank_ && plan.send && plan.error_feedback &&
             g.residual[static_cast<std::size_t>(p)].get() == res && same_codec(plan.codec, codec);
  }
  return count;
}

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
      DLION_CHECK(!r || r->empty() || r->size() == n, InvalidArgument, "rank ", rank_,
                  ": group ", id, " has ", n, " elements, but a residual of ", r->size(),
                  " was restored for it");
    }
    g.n = n;
    g.registered = true;
  }
  return g;
}

void PeerEngine::start(Task& task, Clock::time_point now) {
  task.started = now;
  task.next_warning = stall_.first_warning(now);  // the schedule of StallClock (peer_stall.cc)
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
  // Links with the same codec share one message, encoded once: without error feedback, and with
  // it when their residuals are one (the same storage, or none yet: links that have carried the
  // same plans since their start hold equal residuals, so one residual serves them all).
  struct Done {
    const wire::Codec* codec;
    bool ef;
    const std::vector<float>* before;       // the residual the message was encoded from
    std::shared_ptr<std::vector<float>> after;  // what the links that share it hold afterwards
    std::shared_ptr<wire::Message> msg;
  };
  std::vector<Done> done;
  const int tag = kGroupTag + static_cast<int>(r.group);
  for (int i = 1; i < size_; ++i) {
    const int p = (rank_ + i) % size_;
    const LinkPlan& plan = r.links[static_cast<std::size_t>(p)];
    if (!plan.send) continue;
    std::shared_ptr<std::vector<float>>& res = g.residual[static_cast<std::size_t>(p)];
    if (res && res->empty()) res.reset();
    const bool lossless = plan.codec.encoding == wire::Encoding::kDenseF32;
    const bool ef = plan.error_feedback && !(lossless && !res);
    std::shared_ptr<wire::Message> msg;
    for (const Done& d : done) {
      if (d.ef == ef && same_codec(*d.codec, plan.codec) && (!ef || d.before == res.get())) {
        msg = d.msg;
        if (ef) res = d.after;
        break;
      }
    }
    if (!msg) {
      const std::uint64_t seed = seed_of(rank_, r.group, r.step, p);
      wire::Message storage = take(wire::encoded_bound(r.n, plan.codec));
      const std::vector<float>* before = res.get();
      if (!ef) {
        msg = std::make_shared<wire::Message>(wire::encode(r.grad, r.n, plan.codec, f, seed,
                                                           r.reference, std::move(storage)));
      } else {
        // Encode in place only when every link holding this residual shares this message;
        // else this link takes its own copy first (the others keep the residual as it was).
        if (!res) {
          res = std::make_shared<std::vector<float>>(r.n, 0.0f);
        } else if (res.use_count() > sharers(g, r, res.get(), plan.codec)) {
          res = std::make_shared<std::vector<float>>(*res);
        }
        if (lossless) {
          // Dense float32 carries the residual exactly: it is empty afterwards.
          ef_compensate(res->data(), r.grad, r.n);
          msg = std::make_shared<wire::Message>(wire::encode(
              res->data(), r.n, plan.codec, f, seed, r.reference, std::move(storage)));
          res.reset();
        } else {
          msg = std::make_shared<wire::Message>(wire::encode_compensated(
              res->data(), r.grad, r.n, plan.codec, f, seed, r.reference, std::move(storage)));
        }
      }
      done.push_back(Done{&plan.codec, ef, before, res, msg});
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

}  // namespace dlion
