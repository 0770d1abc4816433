// libFuzzer target for the wire decoder: csrc/wire/codec.h validate() and apply_add().
//
// The input is one wire message (the seed corpus in tests/fuzz/corpus/wire holds valid messages
// of every encoding). Each input is tried twice, as a receiver that registered exactly the
// header's sender, group and n would see it:
//   1. as it is: a mutated byte almost always breaks the checksum, so this covers the header
//      and size checks and the checksum rejection;
//   2. with its checksum recomputed, so that the checks behind the checksum (scales, levels,
//      values, tail bits, indices) and apply_add() see every mutation of the payload.
// Whenever validate() accepts, the harness checks what format.h promises about an accepted
// message and aborts (a fuzzer "crash") when a promise is broken:
//   a. re-encoding the decoded header fields gives back the same 64 header bytes (validate()
//      accepts only canonical headers: known flags, the encoding's bits, exact payload_bytes);
//   b. apply_add() with weight 1 into zeros writes only finite values, and for the QSGD
//      encodings |value| <= the scale of its bucket (up to float32 rounding), for SIGN
//      |value| == scale;
//   c. apply_add() touches only the carried indices of a sparse message (first .. first + k - 1
//      for a CONTIGUOUS one).
// ProtocolError is the expected rejection; any other exception is a bug (abort).
// Build and run: tests/fuzz/run_fuzz.sh (clang++ -fsanitize=fuzzer,address,undefined).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <vector>

#include "common/error.h"
#include "wire/checksum.h"
#include "wire/codec.h"

namespace {

namespace wire = dlion::wire;
using wire::Encoding;

// Largest n the harness allocates an output tensor for: every dense encoding of an input of
// -max_len=4096 bytes fits; sparse messages may name any n < 2^32 while carrying few entries,
// those above it are validated but not applied.
constexpr std::uint64_t kMaxApplyN = std::uint64_t{1} << 16;

// |decoded| <= scale, up to float32 rounding: q * (scale / L) may round above scale by a few
// ulps, and by up to L steps of the subnormal spacing when scale is subnormal.
bool within_scale(float v, float scale, int bits) {
  const float L = static_cast<float>((1 << (bits - 1)) - 1);
  const float slack = scale * 0x1p-20f + L * std::numeric_limits<float>::denorm_min();
  return std::fabs(v) <= scale + slack;
}

[[noreturn]] void fail(const char* what, std::size_t i = 0, double value = 0.0) {
  std::fprintf(stderr, "wire_fuzz: broken promise: %s (at %zu, value %g)\n", what, i, value);
  std::abort();
}

// Promise (a): the header is canonical.
void check_canonical(const wire::Decoded& d, const std::uint8_t* msg, std::size_t len) {
  wire::Fields f;
  const wire::Header& h = d.header();
  f.kind = static_cast<wire::Kind>(h.kind);
  f.sender = h.sender, f.step = h.step, f.group = h.group, f.encoding = d.encoding();
  f.bits = d.bits(), f.n = h.n, f.k = h.k, f.weight = h.weight, f.bucket = d.bucket();
  f.flags = h.flags;
  std::vector<std::uint64_t> copy((len + 7) / 8);
  auto* c = reinterpret_cast<std::uint8_t*>(copy.data());
  std::memcpy(c, msg, len);
  wire::encode_header(f, c, len);
  if (std::memcmp(c, msg, len) != 0) fail("re-encoding the accepted header changed the message");
}

// Promises (b) and (c).
void check_applied(const wire::Decoded& d) {
  const std::size_t n = d.n();
  std::vector<float> out(n, 0.0f);
  wire::apply_add(d, out.data(), n, 1.0f);
  std::vector<char> carried;
  if (wire::is_sparse(d.encoding())) {
    carried.assign(n, 0);
    for (std::size_t j = 0; j < d.k(); ++j) carried[d.index(j)] = 1;
  }
  const Encoding e = d.encoding();
  for (std::size_t i = 0; i < n; ++i) {
    const float v = out[i];
    if (!std::isfinite(v)) fail("apply_add wrote a non-finite value", i, v);
    if (!carried.empty() && !carried[i] && v != 0.0f) fail("apply_add wrote outside idx", i, v);
    if (e == Encoding::kQsgd && !within_scale(v, d.scales().data[i / d.bucket()], d.bits()))
      fail("QSGD value above its bucket's scale", i, v);
    if (e == Encoding::kSign && std::fabs(v) != d.scales().data[0])
      fail("SIGN value other than +-scale", i, v);
  }
  if (e == Encoding::kSparseQsgd8) {
    for (std::size_t j = 0; j < d.k(); ++j) {
      const float v = out[d.index(j)];
      if (!within_scale(v, d.scales().data[j / d.bucket()], 8))
        fail("SPARSE_QSGD8 value above its bucket's scale", j, v);
    }
  }
}

// One validate() as a receiver that registered the header's own sender, group and n.
void try_message(const std::uint8_t* msg, std::size_t len) {
  wire::Header h{};
  std::memcpy(&h, msg, wire::kHeaderBytes);
  if (h.n >= (std::uint64_t{1} << 32) || h.sender > 0x7fffffffu) return;  // receiver's preconditions
  try {
    const wire::Decoded d = wire::validate(msg, len, static_cast<int>(h.sender), h.group, h.n);
    check_canonical(d, msg, len);
    if (d.n() <= kMaxApplyN) check_applied(d);
  } catch (const dlion::ProtocolError&) {
    // the expected rejection
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "wire_fuzz: unexpected exception: %s\n", ex.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < wire::kHeaderBytes || size > (std::size_t{1} << 22)) {
    // Too short for a header: must be rejected (with any registration) and nothing else.
    if (size < wire::kHeaderBytes) {
      std::uint64_t buf[8] = {};
      std::memcpy(buf, data, size);
      try {
        wire::validate(reinterpret_cast<const std::uint8_t*>(buf), size, 0, 0, 0);
        fail("a message shorter than the header was accepted", size);
      } catch (const dlion::ProtocolError&) {
      }
    }
    return 0;
  }
  std::vector<std::uint64_t> words((size + 7) / 8);  // validate() needs 8-byte alignment
  auto* msg = reinterpret_cast<std::uint8_t*>(words.data());
  std::memcpy(msg, data, size);
  try_message(msg, size);  // 1. as received
  // 2. with a correct checksum (XXH64 of the message with the checksum field read as zero)
  std::memset(msg + wire::kChecksumOffset, 0, 8);
  const std::uint64_t sum = wire::hash64(msg, size);
  std::memcpy(msg + wire::kChecksumOffset, &sum, 8);
  try_message(msg, size);
  return 0;
}
