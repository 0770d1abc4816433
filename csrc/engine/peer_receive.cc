// One arrived message of the peer engine, validated before anything else reads it (any field
// or index out of place is a ProtocolError naming the sender, and the message is not applied),
// then routed by its channel: a heartbeat to liveness, an acknowledgement to its link's timing,
// a probe counted and acknowledged, a gradient into its group's inbox (step 3 of
// peer_engine.h applies it) and acknowledged. Any message counts as a sign of life.
#include <algorithm>
#include <memory>
#include <mutex>
#include <utility>

#include "common/error.h"
#include "engine/peer_engine.h"
#include "engine/peer_wire.h"

namespace dlion {

using namespace peer;

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

}  // namespace dlion
