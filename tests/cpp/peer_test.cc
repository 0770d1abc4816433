// The peer engine on its own, without Python: run under mpiexec with 1..N ranks (and
// sanitizers). Checks the dense aggregate (exact, rank order), top-k with error feedback
// (received + residual == sent), bounded staleness with every message applied once, the probe,
// emulated pacing, large dense messages in place, rejected requests, and a clean shutdown.
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "engine/peer_engine.h"

using namespace dlion;

static float value(int rank, std::uint64_t step, std::size_t i) {
  return static_cast<float>(((i * 7919 + static_cast<std::size_t>(rank) * 104729 + step * 31) %
                             2001)) /
             1000.0f -
         1.0f;
}

static std::vector<LinkPlan> plans(int size, wire::Encoding e, std::uint64_t k, bool ef) {
  LinkPlan p;
  p.codec.encoding = e;
  p.codec.k = k;
  p.error_feedback = ef;
  return std::vector<LinkPlan>(static_cast<std::size_t>(size), p);
}

static void test_dense(PeerEngine& e) {
  const int r = e.rank(), p = e.size();
  const std::size_t n = 3001;
  for (std::uint64_t step = 0; step < 4; ++step) {
    std::vector<float> g(n), out(n);
    for (std::size_t i = 0; i < n; ++i) g[i] = value(r, step, i);
    ExchangeRequest req;
    req.group = 0, req.step = step, req.grad = g.data(), req.out = out.data(), req.n = n;
    req.weight = 0.25f, req.links = plans(p, wire::Encoding::kDenseF32, 0, false);
    req.name = "dense";
    CHECK(e.exchange(req)->wait(30.0), "dense step %d timed out", static_cast<int>(step));
    for (std::size_t i = 0; i < n; ++i) {
      float want = 0.0f;
      for (int q = 0; q < p; ++q) want += 0.25f * value(q, step, i);
      CHECK(out[i] == want, "dense step %d i=%zu got %g want %g", static_cast<int>(step), i,
            static_cast<double>(out[i]), static_cast<double>(want));
    }
  }
}

static void test_topk_feedback(PeerEngine& e) {
  const int r = e.rank(), p = e.size();
  const std::size_t n = 5000, steps = 6;
  std::vector<double> received(n, 0.0);
  for (std::uint64_t step = 0; step < steps; ++step) {
    std::vector<float> g(n), out(n);
    for (std::size_t i = 0; i < n; ++i) g[i] = value(r, step, i);
    ExchangeRequest req;
    req.group = 1, req.step = step, req.grad = g.data(), req.out = out.data(), req.n = n;
    req.links = plans(p, wire::Encoding::kSparseQsgd8, 50, true);
    req.name = "topk";
    CHECK(e.exchange(req)->wait(30.0), "topk step timed out");
    for (std::size_t i = 0; i < n; ++i) received[i] += static_cast<double>(out[i]) - g[i];
  }
  // Sum of what every peer sent us + what each holds for us == their gradients. Each rank
  // checks its own links' residuals against its own gradients instead (no gather here): the
  // residual plus what was sent equals the gradients, so the residual must be non-trivial.
  if (p > 1) {
    const std::vector<float> res = e.residual(1, (r + 1) % p);
    CHECK(res.size() == n, "residual has %zu elements", res.size());
    std::size_t nonzero = 0;
    for (float v : res) nonzero += v != 0.0f;
    CHECK(nonzero > n / 2, "top-1%% left only %zu entries behind", nonzero);
    const auto stats = e.link_stats();
    CHECK(stats[static_cast<std::size_t>((r + 1) % p)].last_k == 50, "last_k");
  }
}

static void test_staleness(PeerEngine& e) {
  const int r = e.rank(), p = e.size();
  const std::size_t n = 64, steps = 10;
  double total = 0.0;
  for (std::uint64_t step = 0; step < steps; ++step) {
    if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::vector<float> g(n, static_cast<float>((r + 1) * (step + 1))), out(n);
    ExchangeRequest req;
    req.group = 2, req.step = step, req.grad = g.data(), req.out = out.data(), req.n = n;
    req.links = plans(p, wire::Encoding::kDenseF32, 0, false);
    req.staleness = 2, req.sync = step + 1 == steps, req.name = "stale";
    CHECK(e.exchange(req)->wait(30.0), "stale step timed out");
    total += out[0];
  }
  double want = 0.0;
  for (int q = 0; q < p; ++q)
    for (std::size_t s = 0; s < steps; ++s) want += static_cast<double>((q + 1) * (s + 1));
  CHECK(total == want, "applied %g, sent %g: a message was lost or applied twice", total, want);
}

// Each rank sends only to the next rank and waits only for the previous one (send flags and
// the expect mask): the aggregate is its own gradient plus exactly the previous rank's.
static void test_ring_subset(PeerEngine& e) {
  const int r = e.rank(), p = e.size();
  if (p < 2) return;
  const int next = (r + 1) % p, prev = (r + p - 1) % p;
  const std::size_t n = 32;
  for (std::uint64_t step = 0; step < 4; ++step) {
    std::vector<float> g(n), out(n);
    for (std::size_t i = 0; i < n; ++i) g[i] = value(r, step, i);
    ExchangeRequest req;
    req.group = 3, req.step = step, req.grad = g.data(), req.out = out.data(), req.n = n;
    req.links = plans(p, wire::Encoding::kDenseF32, 0, false);
    for (int q = 0; q < p; ++q) req.links[static_cast<std::size_t>(q)].send = q == next;
    req.expect.assign(static_cast<std::size_t>(p), 0);
    req.expect[static_cast<std::size_t>(prev)] = 1;
    req.name = "ring";
    CHECK(e.exchange(req)->wait(30.0), "ring step timed out");
    for (std::size_t i = 0; i < n; ++i) {
      const float want = r < prev ? value(r, step, i) + value(prev, step, i)
                                  : value(prev, step, i) + value(r, step, i);
      CHECK(out[i] == want, "rank %d step %llu [%zu]: %g, want %g", r,
            static_cast<unsigned long long>(step), i, out[i], want);
    }
  }
  ExchangeRequest bad;
  bad.group = 4, bad.n = 0, bad.links = plans(p, wire::Encoding::kDenseF32, 0, false);
  bad.expect.assign(static_cast<std::size_t>(p) + 1, 1);
  CHECK(error_of([&] { e.exchange(bad); }).find("expect needs one flag per rank") !=
            std::string::npos,
        "a wrong-sized expect mask is refused");
}

// Large dense messages (pooled storage of huge pages, wire/message.h) on unpaced links:
// several groups in flight at once, out == grad, the exact rank-order aggregate, and the link
// counting every byte of header and payload.
static void test_large_dense(PeerEngine& e) {
  const int r = e.rank(), p = e.size();
  const std::size_t n = 300007;  // 1.2 MB: above wire::Message::kHugeBytes
  static_assert(300007 * sizeof(float) >= wire::Message::kHugeBytes);
  e.set_caps(std::vector<LinkCap>(static_cast<std::size_t>(p), LinkCap{}));
  const std::uint64_t sent_before =
      p > 1 ? e.link_stats()[static_cast<std::size_t>((r + 1) % p)].bytes_sent : 0;
  constexpr int kGroups = 3;
  for (std::uint64_t step = 0; step < 3; ++step) {
    std::vector<std::vector<float>> bufs(kGroups, std::vector<float>(n));
    std::vector<HandlePtr> handles;
    for (int k = 0; k < kGroups; ++k) {
      for (std::size_t i = 0; i < n; ++i) bufs[k][i] = value(r, step * 10 + k, i);
      ExchangeRequest req;
      req.group = 20 + static_cast<std::uint32_t>(k), req.step = step, req.n = n;
      req.grad = bufs[k].data(), req.out = bufs[k].data();  // in place
      req.weight = 0.5f, req.links = plans(p, wire::Encoding::kDenseF32, 0, false);
      req.name = "large";
      handles.push_back(e.exchange(req));
    }
    for (auto& h : handles) CHECK(h->wait(30.0), "large dense step timed out");
    for (int k = 0; k < kGroups; ++k) {
      for (std::size_t i = 0; i < n; ++i) {
        float want = 0.0f;
        for (int q = 0; q < p; ++q) want += 0.5f * value(q, step * 10 + k, i);
        CHECK(bufs[k][i] == want, "large dense group %d step %d [%zu]: %g, want %g", k,
              static_cast<int>(step), i, static_cast<double>(bufs[k][i]),
              static_cast<double>(want));
      }
    }
  }
  if (p > 1) {
    const std::uint64_t sent =
        e.link_stats()[static_cast<std::size_t>((r + 1) % p)].bytes_sent - sent_before;
    CHECK(sent == 3 * kGroups * (wire::kHeaderBytes + 4 * n), "large dense bytes_sent %llu",
          static_cast<unsigned long long>(sent));
  }
}

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  CHECK(provided == MPI_THREAD_MULTIPLE, "no MPI_THREAD_MULTIPLE");
  {
    EngineConfig config;
    config.stall_timeout_s = 30;
    config.probe_bytes = 256 * 1024;
    PeerEngine e(MPI_COMM_WORLD, config);
    std::vector<LinkCap> caps(static_cast<std::size_t>(e.size()), LinkCap{20e6, 0.001});
    e.set_caps(caps);
    CHECK(e.probe()->wait(30.0), "probe timed out");
    if (e.size() > 1) {
      const auto s = e.link_stats()[static_cast<std::size_t>((e.rank() + 1) % e.size())];
      CHECK(s.latency_samples > 0 && s.bandwidth_samples > 0,
            "probe measured nothing: latency %g (%d samples), bandwidth %g (%d samples)",
            s.latency_s, static_cast<int>(s.latency_samples), s.bandwidth_Bps,
            static_cast<int>(s.bandwidth_samples));
      CHECK(s.latency_s > 0.0005 && s.latency_s < 0.05, "latency %g", s.latency_s);
    }
    test_dense(e);
    test_topk_feedback(e);
    test_staleness(e);
    test_ring_subset(e);
    test_large_dense(e);
    // Rejected before anything is queued.
    ExchangeRequest bad;
    bad.links = plans(e.size(), wire::Encoding::kDenseF32, 0, false);
    bad.weight = -1.0f;
    CHECK(error_of([&] { e.exchange(bad); }).find("weight") != std::string::npos, "weight");
    bad.weight = 1.0f;
    bad.links.pop_back();
    CHECK(error_of([&] { e.exchange(bad); }).find("link plan") != std::string::npos, "links");
    e.shutdown();
    CHECK(e.poisoned().empty(), "poisoned: %s", e.poisoned().c_str());
  }
  MPI_Finalize();
  return 0;
}
