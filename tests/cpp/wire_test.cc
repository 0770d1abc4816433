// Wire format (csrc/wire): XXH64 reference vectors, round trips of every encoding, and an
// exhaustive single-byte-change loop, truncation/extension, misaddressed messages and bad
// indices, each of which must raise ProtocolError naming the sender and leave out untouched.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "check.h"
#include "common/error.h"
#include "compress/cast.h"
#include "compress/quantize.h"
#include "wire/checksum.h"
#include "wire/codec.h"

namespace {

using dlion::wire::Encoding;
namespace wire = dlion::wire;

constexpr int kSender = 2;
constexpr std::uint32_t kGroup = 5;

// An 8-byte aligned message buffer.
struct Msg {
  std::vector<std::uint64_t> words;
  std::size_t len = 0;
  std::uint8_t* data() { return reinterpret_cast<std::uint8_t*>(words.data()); }
  const std::uint8_t* data() const { return reinterpret_cast<const std::uint8_t*>(words.data()); }
  void resize(std::size_t n) {
    words.resize(n / 8 + 1);
    len = n;
  }
};

template <typename T>
void put(Msg& m, std::size_t offset, const std::vector<T>& v) {
  if (!v.empty())
    std::memcpy(m.data() + wire::kHeaderBytes + offset, v.data(), v.size() * sizeof(T));
}

struct Case {
  Msg msg;
  std::vector<float> ref;  // decoded dense values
};

std::vector<float> sample(std::size_t n) {
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = std::sin(static_cast<float>(i) * 1.7f + 0.3f);
  return x;
}

Case make(Encoding e, std::size_t n, int bits = 0) {
  const std::vector<float> x = sample(n);
  wire::Fields f;
  f.sender = kSender, f.group = kGroup, f.step = 9, f.encoding = e, f.n = n, f.k = n;
  f.weight = 0.5f, f.bits = bits ? bits : wire::required_bits(e, 0), f.bucket = 3;
  std::vector<std::uint32_t> idx;
  for (std::uint32_t i = 0; i < n; i += 2) idx.push_back(i);
  if (wire::is_sparse(e)) f.k = idx.size();
  const wire::Layout l = wire::layout(e, f.n, f.k, f.bits, f.bucket);
  Case c;
  c.msg.resize(wire::kHeaderBytes + l.total);
  c.ref.assign(n, 0.0f);
  std::vector<float> vals(idx.size());
  for (std::size_t i = 0; i < idx.size(); ++i) vals[i] = x[idx[i]];
  if (e == Encoding::kDenseF32) {
    put(c.msg, l.values, x);
    c.ref = x;
  } else if (e == Encoding::kSparseF32) {
    put(c.msg, l.idx, idx), put(c.msg, l.values, vals);
    for (std::size_t i = 0; i < idx.size(); ++i) c.ref[idx[i]] = vals[i];
  } else if (e == Encoding::kSparseQsgd8 || e == Encoding::kQsgd) {
    const bool sparse = e == Encoding::kSparseQsgd8;
    const std::vector<float>& src = sparse ? vals : x;
    std::vector<std::uint8_t> packed(l.packed_bytes);
    std::vector<float> scales(l.n_scales), dec(src.size());
    dlion::qsgd_encode(src.data(), src.size(), f.bits, f.bucket, 7, packed.data(), scales.data());
    dlion::qsgd_decode(packed.data(), scales.data(), src.size(), f.bits, f.bucket, dec.data());
    put(c.msg, l.packed, packed), put(c.msg, l.scales, scales);
    if (sparse) put(c.msg, l.idx, idx);
    for (std::size_t i = 0; i < dec.size(); ++i) c.ref[sparse ? idx[i] : i] = dec[i];
  } else if (e == Encoding::kSign) {
    std::vector<std::uint8_t> signs(l.packed_bytes);
    std::vector<float> scale(1);
    dlion::sign_encode(x.data(), n, signs.data(), scale.data());
    dlion::sign_decode(signs.data(), scale[0], n, c.ref.data());
    put(c.msg, l.packed, signs), put(c.msg, l.scales, scale);
  } else {
    std::vector<std::uint16_t> h(n);
    const bool fp16 = e == Encoding::kFp16;
    (fp16 ? dlion::to_fp16 : dlion::to_bf16)(x.data(), n, h.data());
    (fp16 ? dlion::from_fp16 : dlion::from_bf16)(h.data(), n, c.ref.data());
    put(c.msg, l.values, h);
  }
  wire::encode_header(f, c.msg.data(), c.msg.len);
  return c;
}

// The ProtocolError message of validating m (empty when it validated), applying it when valid.
std::string apply(const Msg& m, std::vector<float>& out, int sender = kSender,
                  std::uint32_t group = kGroup) {
  try {
    const wire::Decoded d = wire::validate(m.data(), m.len, sender, group, out.size());
    wire::apply_add(d, out.data(), out.size(), d.weight());
    return "";
  } catch (const dlion::ProtocolError& e) {
    return e.what();
  }
}

void expect_rejected(const Msg& m, std::size_t n, const char* what, int sender = kSender,
                     std::uint32_t group = kGroup) {
  std::vector<float> out(n, 1.25f);
  const std::string err = apply(m, out, sender, group);
  CHECK(!err.empty(), "%s: accepted", what);
  const std::string who = "from rank " + std::to_string(sender);
  CHECK(err.find(who) != std::string::npos && err.find("not applied") != std::string::npos,
        "%s: message %s", what, err.c_str());
  for (float v : out) CHECK(v == 1.25f, "%s: out was modified", what);
}

const std::vector<std::pair<Encoding, int>> kAll = {
    {Encoding::kDenseF32, 0}, {Encoding::kSparseF32, 0}, {Encoding::kSparseQsgd8, 0},
    {Encoding::kQsgd, 8},     {Encoding::kQsgd, 4},      {Encoding::kQsgd, 2},
    {Encoding::kSign, 0},     {Encoding::kFp16, 0},      {Encoding::kBf16, 0}};

void test_checksum() {
  CHECK(wire::hash64("", 0) == 0xEF46DB3751D8E999ULL, "xxh64('')");
  CHECK(wire::hash64("a", 1) == 0xD24EC4F1A98C6E5BULL, "xxh64('a')");
  CHECK(wire::hash64("abc", 3) == 0x44BC2CF5AD770999ULL, "xxh64('abc')");
  std::vector<std::uint8_t> buf(300);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<std::uint8_t>(i * 31 + 7);
  for (std::size_t len = 0; len + 64 <= buf.size(); len += 13)
    CHECK(wire::hash64_concat(buf.data(), 64, buf.data() + 64, len, 9) ==
              wire::hash64(buf.data(), 64 + len, 9),
          "concat at len %zu", len);
}

void test_round_trips() {
  for (const auto& [e, bits] : kAll)
    for (std::size_t n : {0, 1, 7, 100, 20000}) {
      Case c = make(e, n, bits);
      std::vector<float> out(n, 1.0f);
      const std::string err = apply(c.msg, out);
      CHECK(err.empty(), "encoding %d n %zu: %s", static_cast<int>(e), n, err.c_str());
      for (std::size_t i = 0; i < n; ++i)
        CHECK(std::fabs(out[i] - (1.0f + 0.5f * c.ref[i])) <= 1e-6f, "enc %d n %zu i %zu",
              static_cast<int>(e), n, i);
    }
}

void test_every_byte_change() {
  for (const auto& [e, bits] : kAll) {
    const Case c = make(e, 11, bits);
    for (std::size_t pos = 0; pos < c.msg.len; ++pos)
      for (int delta = 1; delta < 256; ++delta) {
        Msg bad = c.msg;
        bad.data()[pos] = static_cast<std::uint8_t>(bad.data()[pos] + delta);
        expect_rejected(bad, 11, "byte change");
      }
    for (std::size_t len = 0; len < c.msg.len + 9; ++len) {
      if (len == c.msg.len) continue;
      Msg bad = c.msg;
      bad.resize(len);
      expect_rejected(bad, 11, "truncated/extended");
    }
  }
}

void test_misaddressed() {
  const Case c = make(Encoding::kSparseF32, 11);
  expect_rejected(c.msg, 11, "sender", kSender + 1);
  expect_rejected(c.msg, 11, "group", kSender, kGroup + 1);
  expect_rejected(c.msg, 10, "n");
  std::vector<float> out(11);
  CHECK(apply(c.msg, out, 4).find("sender is 2, expected 4") != std::string::npos, "sender text");
  CHECK(apply(c.msg, out, kSender, 6).find("group is 5, expected 6") != std::string::npos,
        "group text");
  std::vector<float> out10(10);
  CHECK(apply(c.msg, out10).find("n is 11, expected 10") != std::string::npos, "n text");
}

// A sparse message with these indices and a correct checksum.
Msg sparse_with(const std::vector<std::uint32_t>& idx, std::size_t n) {
  wire::Fields f;
  f.sender = kSender, f.group = kGroup, f.encoding = Encoding::kSparseF32, f.n = n;
  f.k = idx.size();
  const wire::Layout l = wire::layout(f.encoding, f.n, f.k, f.bits, 0);
  Msg m;
  m.resize(wire::kHeaderBytes + l.total);
  put(m, l.idx, idx), put(m, l.values, std::vector<float>(idx.size(), 1.0f));
  wire::encode_header(f, m.data(), m.len);
  return m;
}

void test_bad_indices() {
  expect_rejected(sparse_with({1, 8}, 8), 8, "index == n");
  expect_rejected(sparse_with({1, 0xffffffffu}, 8), 8, "index 2^32-1");
  expect_rejected(sparse_with({4, 2}, 8), 8, "unsorted");
  expect_rejected(sparse_with({3, 3}, 8), 8, "repeated");
  std::vector<float> out(8);
  CHECK(apply(sparse_with({4, 2}, 8), out).find("strictly increasing") != std::string::npos,
        "unsorted text");
  CHECK(apply(sparse_with({0, 7}, 8), out).empty() && out[0] == 1.0f && out[7] == 1.0f,
        "good sparse message");
}

void test_receiver_misuse() {
  const Case c = make(Encoding::kDenseF32, 4);
  bool threw = false;
  try {
    wire::validate(c.msg.data(), c.msg.len, kSender, kGroup, std::uint64_t{1} << 32);
  } catch (const dlion::InvalidArgument&) {
    threw = true;
  }
  CHECK(threw, "registered n >= 2^32 must be InvalidArgument");
  threw = false;
  try {
    wire::validate(c.msg.data() + 1, c.msg.len - 1, kSender, kGroup, 4);
  } catch (const dlion::InvalidArgument&) {
    threw = true;
  }
  CHECK(threw, "a misaligned buffer must be InvalidArgument");
}

}  // namespace

int main() {
  test_checksum();
  test_round_trips();
  test_every_byte_change();
  test_misaddressed();
  test_bad_indices();
  test_receiver_misuse();
  std::printf("wire_test: ok\n");
  return 0;
}
