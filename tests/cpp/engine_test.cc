// The engine on its own, without Python: run under mpiexec with 1..N ranks (and sanitizers).
// Checks allreduce (collective and ring paths, many segments, paced on emulated links),
// broadcast, allgather, barrier, mismatches that every rank detects (count, layout), and a clean
// shutdown; then the fused small allreduce (its block size policy, sizes around the block,
// mismatches of count, dtype, op, name, layout and kind on every rank, buffers unchanged).
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "check.h"
#include "common/error.h"
#include "engine/engine.h"

using namespace dlion;

static void test_allreduce(Engine& e, std::size_t n, ReduceOp op) {
  const int r = e.rank(), p = e.size();
  std::vector<double> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<double>(i % 97) + r;
  OpRequest req;
  req.kind = OpKind::Allreduce;
  req.dtype = DType::Float64;
  req.reduce = op;
  req.data = x.data();
  req.count = n;
  req.name = "x" + std::to_string(n);
  auto h = e.submit(req);
  CHECK(h->wait(30.0), "allreduce of %zu timed out", n);
  for (std::size_t i = 0; i < n; ++i) {
    double want = static_cast<double>(i % 97) * p + p * (p - 1) / 2.0;
    if (op == ReduceOp::Average) want /= p;
    CHECK(std::abs(x[i] - want) < 1e-9, "n=%zu i=%zu got %f want %f", n, i, x[i], want);
  }
}

// A float32 or float64 allreduce of n elements of rank-dependent values, checked exactly
// (small integers: every order of summation gives the same bits).
template <class T>
static void test_small(Engine& e, std::size_t n, ReduceOp op) {
  const int r = e.rank(), p = e.size();
  std::vector<T> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<T>(i % 13 + 4 * r);
  OpRequest req;
  req.kind = OpKind::Allreduce;
  req.dtype = sizeof(T) == 4 ? DType::Float32 : DType::Float64;
  req.reduce = op;
  req.data = x.data();
  req.count = n;
  req.name = "small" + std::to_string(n);
  CHECK(e.submit(req)->wait(30.0), "small allreduce of %zu timed out", n);
  for (std::size_t i = 0; i < n; ++i) {
    T want = static_cast<T>((i % 13) * p + 4 * p * (p - 1) / 2);
    if (op == ReduceOp::Average) want = static_cast<T>(want / static_cast<T>(p));
    CHECK(std::abs(x[i] - want) <= std::abs(want) * 1e-6, "n=%zu i=%zu got %g want %g", n, i,
          static_cast<double>(x[i]), static_cast<double>(want));
  }
}

// An allreduce that differs on the last rank (`differ` edits its request): MismatchError on
// every rank naming the last one, and the buffer unchanged.
template <class F>
static void small_mismatch(Engine& e, const char* what, F differ) {
  std::vector<double> x(64, 1.0 + e.rank());
  OpRequest req;
  req.kind = OpKind::Allreduce;
  req.dtype = DType::Float64;
  req.reduce = ReduceOp::Sum;
  req.data = x.data();
  req.count = 50;
  req.name = "odd";
  if (e.rank() == e.size() - 1) differ(req);
  std::string message;
  try {
    e.submit(req)->wait(30.0);
  } catch (const MismatchError& err) {
    message = err.what();
  }
  const std::string needle = "rank " + std::to_string(e.size() - 1) + " submitted ";
  CHECK(message.find(needle) != std::string::npos, "%s: no MismatchError naming the last rank "
        "(got '%s')", what, message.c_str());
  for (double v : x) CHECK(v == 1.0 + e.rank(), "%s: a mismatched allreduce wrote data", what);
}

static void test_block_size() {
  BlockSize b(256 * 1024);
  CHECK(b.cap() == BlockSize::kMinBytes, "initial cap %zu", b.cap());
  auto meta = [](std::uint64_t count, DType t, OpKind k = OpKind::Allreduce) {
    OpRequest r;
    r.kind = k;
    r.dtype = t;
    r.count = count;
    return make_meta(0, r);
  };
  CHECK(b.fits(meta(256, DType::Float32)) && !b.fits(meta(257, DType::Float32)), "1 KiB");
  CHECK(!b.fits(meta(0, DType::Float32)) && !b.fits(meta(8, DType::Byte, OpKind::Broadcast)),
        "empty or not an allreduce");
  b.learn(std::vector<OpMeta>{meta(10, DType::Float32), meta(1000, DType::Float64)});
  CHECK(b.cap() == 8192, "grows to the largest (8000 B, rounded up): %zu", b.cap());
  b.learn(std::vector<OpMeta>{meta(1'000'000, DType::Float32)});
  CHECK(b.cap() == 8192, "a large allreduce is not the block's: %zu", b.cap());
  for (int i = 0; i < 2 * BlockSize::kWindow; ++i)
    b.learn(std::vector<OpMeta>{meta(300, DType::Float32)});
  CHECK(b.cap() == 1280, "shrinks after a window without larger ones: %zu", b.cap());
  b.learn(std::vector<OpMeta>{meta(16384, DType::Float32)});
  CHECK(b.cap() == BlockSize::kMaxBytes, "64 KiB: %zu", b.cap());
  CHECK(!b.fits(meta(16385, DType::Float32)), "above kMaxBytes");
  BlockSize small(1000);  // ring_threshold_bytes below kMaxBytes
  small.learn(std::vector<OpMeta>{meta(2000, DType::Float32)});
  CHECK(small.cap() == BlockSize::kMinBytes && !small.fits(meta(251, DType::Float32)),
        "never above the ring threshold");
}

// The fused path (small_allreduce.h) with the default thresholds: sizes around the block size
// as it grows and shrinks, then mismatches of every kind, detected on every rank.
static void test_fused(MPI_Comm comm) {
  EngineConfig config;
  config.stall_timeout_s = 30;
  Engine e(comm, config);
  for (std::size_t n : {1, 255, 256, 257, 2000, 2047, 2048, 2049, 16384, 16385, 9000, 3})
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average}) {
      test_small<float>(e, n, op);
      test_small<double>(e, n, op);
    }
  if (e.size() > 1) {
    CHECK(e.stats().fused_allreduces > 20, "fused: %llu",
          static_cast<unsigned long long>(e.stats().fused_allreduces));
    small_mismatch(e, "count", [](OpRequest& r) { r.count = 51; });
    small_mismatch(e, "dtype", [](OpRequest& r) { r.dtype = DType::Float32; });
    small_mismatch(e, "op", [](OpRequest& r) { r.reduce = ReduceOp::Average; });
    small_mismatch(e, "name", [](OpRequest& r) { r.name = "other"; });
    small_mismatch(e, "layout", [](OpRequest& r) { r.layout = "float64[5,10]"; });
    // Beyond the block on one rank only: it joins the others' block with an empty one.
    std::vector<double> big(20000, 0.0);
    small_mismatch(e, "large count", [&](OpRequest& r) {
      r.data = big.data();
      r.count = big.size();
    });
    // Another kind of operation on one rank (a broadcast, a barrier).
    std::vector<unsigned char> bytes(400, 7);
    small_mismatch(e, "broadcast", [&](OpRequest& r) {
      r.kind = OpKind::Broadcast;
      r.dtype = DType::Byte;
      r.data = bytes.data();
      r.count = bytes.size();
    });
    CHECK(bytes[0] == 7, "a mismatched broadcast wrote data");
    small_mismatch(e, "barrier", [](OpRequest& r) {
      r.kind = OpKind::Barrier;
      r.count = 0;
    });
  }
  test_small<float>(e, 1000, ReduceOp::Sum);  // still usable, and in step
  CHECK(e.poisoned().empty(), "engine poisoned: %s", e.poisoned().c_str());
  CHECK(e.stats().ring_allreduces == 0, "a small allreduce took the ring");
  e.shutdown();
}

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  CHECK(provided == MPI_THREAD_MULTIPLE, "no MPI_THREAD_MULTIPLE");
  {
    EngineConfig config;
    config.ring_threshold_bytes = 64;   // most allreduces take the ring
    config.ring_segment_bytes = 1024;   // with many segments in flight
    config.stall_timeout_s = 30;
    Engine e(MPI_COMM_WORLD, config);
    for (std::size_t n : {0, 1, 3, 8, 100, 1000, 12345, 200000})
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average}) test_allreduce(e, n, op);

    // Emulated links (every rank's sends on one wire of a local table, 1 ms latency): the
    // rings hold each segment's send until the link carries it, and still add up exactly.
    e.share_wires(SiteClocks::local(1));
    e.set_caps(std::vector<LinkCap>(static_cast<std::size_t>(e.size()), {200e6, 0.001, 0}));
    for (std::size_t n : {100, 12345, 200000})
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average}) test_allreduce(e, n, op);
    CHECK(!error_of([&] { e.set_caps({}); }).empty(), "one cap per rank");

    // Two sites (the lower half of the ranks and the upper half): site-aware allreduce (still
    // paced).
    std::vector<int> sites;
    for (int r = 0; r < e.size(); ++r) sites.push_back(2 * r / e.size());
    e.set_sites(sites);
    for (std::size_t n : {3, 100, 12345, 200000})
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average}) test_allreduce(e, n, op);
    if (e.size() >= 3) CHECK(e.stats().hierarchical_allreduces > 0, "no hierarchical allreduce");

    std::vector<float> b(1000, static_cast<float>(e.rank()));
    OpRequest bc;
    bc.kind = OpKind::Broadcast;
    bc.dtype = DType::Float32;
    bc.data = b.data();
    bc.count = b.size();
    bc.root = e.size() - 1;
    bc.name = "b";
    CHECK(e.submit(bc)->wait(30.0), "broadcast timed out");
    for (float v : b) CHECK(v == static_cast<float>(e.size() - 1), "broadcast got %f", v);

    std::vector<unsigned char> mine(static_cast<std::size_t>(e.rank()) + 1,
                                    static_cast<unsigned char>(e.rank()));
    OpRequest ag;
    ag.kind = OpKind::Allgather;
    ag.data = mine.data();
    ag.count = mine.size();
    ag.name = "g";
    auto h = e.submit(ag);
    CHECK(h->wait(30.0), "allgather timed out");
    CHECK(h->output_counts().size() == static_cast<std::size_t>(e.size()), "allgather counts");

    if (e.size() > 1) {  // a count mismatch fails on every rank, and the engine goes on
      std::vector<double> x(e.rank() == 0 ? 10 : 11, 1.0);
      OpRequest bad;
      bad.kind = OpKind::Allreduce;
      bad.dtype = DType::Float64;
      bad.reduce = ReduceOp::Sum;
      bad.data = x.data();
      bad.count = x.size();
      bad.name = "bad";
      bool mismatch = false;
      try {
        e.submit(bad)->wait(30.0);
      } catch (const MismatchError& err) {
        mismatch = std::string(err.what()).find("rank 1 submitted allreduce 'bad'") !=
                   std::string::npos;
      }
      CHECK(mismatch, "no MismatchError naming rank 1");

      // The same 16 bytes as int32[4] on rank 0 and int64[2] elsewhere: the layouts differ.
      std::vector<unsigned char> raw(16, static_cast<unsigned char>(e.rank()));
      OpRequest layout;
      layout.kind = OpKind::Broadcast;
      layout.data = raw.data();
      layout.count = raw.size();
      layout.name = "layout";
      layout.layout = e.rank() == 0 ? "int32[4]" : "int64[2]";
      bool named = false;
      try {
        e.submit(layout)->wait(30.0);
      } catch (const MismatchError& err) {
        const std::string what = err.what();
        named = what.find("int32[4]") != std::string::npos &&
                what.find("rank 1 submitted broadcast 'layout'") != std::string::npos &&
                what.find("int64[2]") != std::string::npos;
      }
      CHECK(named, "no MismatchError naming both layouts");
      CHECK(raw[0] == static_cast<unsigned char>(e.rank()), "a mismatched broadcast wrote data");
    }
    OpRequest barrier;
    barrier.kind = OpKind::Barrier;
    barrier.name = "end";
    CHECK(e.submit(barrier)->wait(30.0), "barrier timed out");
    CHECK(e.poisoned().empty(), "engine poisoned: %s", e.poisoned().c_str());
    e.shutdown();
    bool refused = false;
    try {
      e.submit(barrier);
    } catch (const EngineShutdown&) {
      refused = true;
    }
    CHECK(refused, "submit after shutdown was accepted");
  }
  test_block_size();
  test_fused(MPI_COMM_WORLD);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) std::printf("engine_test: ok\n");
  MPI_Finalize();
  return 0;
}
