// Wire format (csrc/wire): XXH64 reference vectors, round trips of every encoding (sparse ones
// also as CONTIGUOUS runs), the encoder's choice of CONTIGUOUS, and an exhaustive
// single-byte-change loop, truncation/extension, misaddressed messages, bad indices, bad flags
// and runs past the end, each of which must raise ProtocolError naming the sender and leave out
// untouched.
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
#include "wire/encode.h"

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

// A valid message of encoding e for sample(n); sparse: the even indices, or with `run` the
// consecutive n / 4 .. n / 4 + (n + 1) / 2 - 1 as a CONTIGUOUS message.
Case make(Encoding e, std::size_t n, int bits = 0, bool run = false) {
  const std::vector<float> x = sample(n);
  wire::Fields f;
  f.sender = kSender, f.group = kGroup, f.step = 9, f.encoding = e, f.n = n, f.k = n;
  f.weight = 0.5f, f.bits = bits ? bits : wire::required_bits(e, 0), f.bucket = 3;
  std::vector<std::uint32_t> idx;
  for (std::uint32_t i = 0; i < n; i += 2)
    idx.push_back(run ? static_cast<std::uint32_t>(n / 4 + idx.size()) : i);
  if (wire::is_sparse(e)) f.k = idx.size();
  if (run && !idx.empty()) f.flags = wire::kFlagContiguous;
  const wire::Layout l = wire::layout(e, f.n, f.k, f.bits, f.bucket, f.flags);
  CHECK(!wire::is_sparse(e) || ((l.first != wire::kAbsent) == (f.flags != 0) &&
                                 (l.idx == wire::kAbsent) == (f.flags != 0)),
        "layout sections for flags %d", int{f.flags});
  const std::vector<std::uint32_t> first(idx.empty() ? 0 : 1, idx.empty() ? 0 : idx[0]);
  Case c;
  c.msg.resize(wire::kHeaderBytes + l.total);
  c.ref.assign(n, 0.0f);
  std::vector<float> vals(idx.size());
  for (std::size_t i = 0; i < idx.size(); ++i) vals[i] = x[idx[i]];
  if (e == Encoding::kDenseF32) {
    put(c.msg, l.values, x);
    c.ref = x;
  } else if (e == Encoding::kSparseF32) {
    put(c.msg, f.flags ? l.first : l.idx, f.flags ? first : idx), put(c.msg, l.values, vals);
    for (std::size_t i = 0; i < idx.size(); ++i) c.ref[idx[i]] = vals[i];
  } else if (e == Encoding::kSparseQsgd8 || e == Encoding::kQsgd) {
    const bool sparse = e == Encoding::kSparseQsgd8;
    const std::vector<float>& src = sparse ? vals : x;
    std::vector<std::uint8_t> packed(l.packed_bytes);
    std::vector<float> scales(l.n_scales), dec(src.size());
    dlion::qsgd_encode(src.data(), src.size(), f.bits, f.bucket, 7, packed.data(), scales.data());
    dlion::qsgd_decode(packed.data(), scales.data(), src.size(), f.bits, f.bucket, dec.data());
    put(c.msg, l.packed, packed), put(c.msg, l.scales, scales);
    if (sparse) put(c.msg, f.flags ? l.first : l.idx, f.flags ? first : idx);
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
std::string apply_msg(const Msg& m, std::vector<float>& out, int sender = kSender,
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
  const std::string err = apply_msg(m, out, sender, group);
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
const std::vector<Encoding> kSparse = {Encoding::kSparseF32, Encoding::kSparseQsgd8};

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

void check_round_trip(const Case& c, std::size_t n, Encoding e, bool run) {
  std::vector<float> out(n, 1.0f);
  const std::string err = apply_msg(c.msg, out);
  CHECK(err.empty(), "encoding %d n %zu run %d: %s", static_cast<int>(e), n, run, err.c_str());
  for (std::size_t i = 0; i < n; ++i)
    CHECK(std::fabs(out[i] - (1.0f + 0.5f * c.ref[i])) <= 1e-6f, "enc %d n %zu run %d i %zu",
          static_cast<int>(e), n, run, i);
}

void test_round_trips() {
  for (const auto& [e, bits] : kAll)
    for (std::size_t n : {0, 1, 7, 100, 20000}) check_round_trip(make(e, n, bits), n, e, false);
  for (Encoding e : kSparse)
    for (std::size_t n : {0, 1, 2, 7, 100, 20000}) {
      const Case c = make(e, n, 0, true);
      check_round_trip(c, n, e, true);
      const wire::Decoded d = wire::validate(c.msg.data(), c.msg.len, kSender, kGroup, n);
      const std::size_t k = (n + 1) / 2;
      CHECK(d.contiguous() == (k > 0) && d.idx().size == 0 && d.first() == (k ? n / 4 : 0),
            "run n %zu: contiguous %d first %u", n, d.contiguous(), d.first());
      const std::size_t scales = e == Encoding::kSparseF32 ? 0 : 4 + 4 * ((k + 2) / 3);
      const std::size_t want = k == 0 ? (e == Encoding::kSparseF32 ? 0 : 4)
                                      : 4 + (e == Encoding::kSparseF32 ? 4 * k : k) + scales;
      CHECK(c.msg.len == wire::kHeaderBytes + want, "run n %zu: %zu bytes, want 64 + %zu", n,
            c.msg.len, want);
    }
}

void test_consecutive() {
  using V = std::vector<std::uint32_t>;
  const auto run = [](const V& v) { return wire::consecutive(v.data(), v.size()); };
  CHECK(!run({}) && run({5}) && run({3, 4, 5}) && run({0xfffffffeu, 0xffffffffu}),
        "consecutive runs");
  CHECK(!run({3, 5}) && !run({0, 0, 2}) && !run({5, 4}) && !run({0xffffffffu, 0}),
        "not consecutive");
}

// wire::encode (the engine's sender) sends every run of consecutive indices as CONTIGUOUS, and
// only those: range selection always, top-k and threshold when they happen to pick a run.
void check_encoded(const wire::Message& m, std::size_t n, const std::vector<float>& want,
                   bool contiguous, std::size_t idx_bytes, const char* what) {
  const wire::Decoded d = wire::validate(m.data(), m.size(), kSender, kGroup, n);
  CHECK(d.contiguous() == contiguous, "%s: contiguous %d", what, d.contiguous());
  const std::size_t k = d.k();
  const std::size_t values = d.encoding() == Encoding::kSparseF32
                                 ? 4 * k
                                 : 4 + 4 * ((k + d.bucket() - 1) / d.bucket()) + k;
  CHECK(m.size() == wire::kHeaderBytes + idx_bytes + values, "%s: %zu bytes", what, m.size());
  std::vector<float> out(n, 0.0f);
  wire::apply_add(d, out.data(), n, 1.0f);
  // 8-bit: stochastic rounding moves a value by at most its bucket scale / 127 (<= 16 / 127)
  const float tol = d.encoding() == Encoding::kSparseF32 ? 0.0f : 0.13f;
  for (std::size_t i = 0; i < n; ++i)
    CHECK(std::fabs(out[i] - want[i]) <= tol, "%s: out[%zu] = %g, want %g", what, i, out[i],
          want[i]);
}

void test_encoder_picks_contiguous() {
  const std::size_t n = 1000;
  std::vector<float> x = sample(n), ref(n, 1.0f);
  for (std::size_t i = 300; i < 340; ++i) x[i] = 10.0f + static_cast<float>(i % 7);
  wire::Fields f;
  f.sender = kSender, f.group = kGroup;
  for (Encoding e : kSparse) {
    wire::Codec c;
    c.encoding = e, c.bucket = 16;
    // a range: the values of x[100, 350)
    c.select = wire::Select::kRange, c.k = 250, c.offset = 100;
    std::vector<float> want(n, 0.0f);
    for (std::size_t i = 100; i < 350; ++i) want[i] = x[i];
    check_encoded(wire::encode(x.data(), n, c, f, 1), n, want, true, 4, "range");
    // a range clipped at the end, and an empty one (offset == n): k == 0 is never CONTIGUOUS
    c.offset = 990, std::fill(want.begin(), want.end(), 0.0f);
    for (std::size_t i = 990; i < n; ++i) want[i] = x[i];
    check_encoded(wire::encode(x.data(), n, c, f, 1), n, want, true, 4, "clipped range");
    c.offset = n, std::fill(want.begin(), want.end(), 0.0f);
    check_encoded(wire::encode(x.data(), n, c, f, 1), n, want, false, 0, "empty range");
    // top-k picking the run 300..339 (the 40 largest), then one that is not a run
    c.select = wire::Select::kTopK, c.k = 40;
    for (std::size_t i = 300; i < 340; ++i) want[i] = x[i];
    check_encoded(wire::encode(x.data(), n, c, f, 1), n, want, true, 4, "top-k run");
    c.k = 41;
    const wire::Message m = wire::encode(x.data(), n, c, f, 1);
    const wire::Decoded d = wire::validate(m.data(), m.size(), kSender, kGroup, n);
    CHECK(!d.contiguous() && d.idx().size == 41, "top-k beyond the run: explicit indices");
    // threshold selecting exactly 300..339 (|x| > 5 * |ref|)
    c.select = wire::Select::kThreshold, c.threshold = 5.0f, c.k = n;
    check_encoded(wire::encode(x.data(), n, c, f, 1, ref.data()), n, want, true, 4,
                  "threshold run");
    // reused storage: a CONTIGUOUS message into the storage of a larger explicit one
    c.select = wire::Select::kTopK, c.k = 41;
    wire::Message big = wire::encode(x.data(), n, c, f, 1);
    c.k = 40;
    check_encoded(wire::encode(x.data(), n, c, f, 1, nullptr, std::move(big)), n, want, true, 4,
                  "top-k run, reused storage");
  }
}

void test_every_byte_change() {
  struct Form {
    Encoding e;
    int bits;
    bool run;
  };
  std::vector<Form> cases;
  for (const auto& [e, bits] : kAll) cases.push_back({e, bits, false});
  for (Encoding e : kSparse) cases.push_back({e, 0, true});
  for (const Form& form : cases) {
    const Case c = make(form.e, 11, form.bits, form.run);
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
  CHECK(apply_msg(c.msg, out, 4).find("sender is 2, expected 4") != std::string::npos, "sender text");
  CHECK(apply_msg(c.msg, out, kSender, 6).find("group is 5, expected 6") != std::string::npos,
        "group text");
  std::vector<float> out10(10);
  CHECK(apply_msg(c.msg, out10).find("n is 11, expected 10") != std::string::npos, "n text");
}

// A sparse message with these indices and a correct checksum.
Msg sparse_with(const std::vector<std::uint32_t>& idx, std::size_t n) {
  wire::Fields f;
  f.sender = kSender, f.group = kGroup, f.encoding = Encoding::kSparseF32, f.n = n;
  f.k = idx.size();
  const wire::Layout l = wire::layout(f.encoding, f.n, f.k, f.bits, 0, 0);
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
  CHECK(apply_msg(sparse_with({4, 2}, 8), out).find("strictly increasing") != std::string::npos,
        "unsorted text");
  CHECK(apply_msg(sparse_with({0, 7}, 8), out).empty() && out[0] == 1.0f && out[7] == 1.0f,
        "good sparse message");
}

// msg with its flags (and k) replaced, resealed with a correct checksum.
Msg reseal(Msg m, std::uint8_t flags, std::uint64_t k) {
  wire::Header h;
  std::memcpy(&h, m.data(), wire::kHeaderBytes);
  h.flags = flags, h.k = k, h.checksum = 0;
  std::memcpy(m.data(), &h, wire::kHeaderBytes);
  h.checksum = wire::hash64(m.data(), m.len);
  std::memcpy(m.data() + wire::kChecksumOffset, &h.checksum, sizeof h.checksum);
  return m;
}

void expect_text(const Msg& m, std::size_t n, const char* a, const char* b) {
  expect_rejected(m, n, a);
  std::vector<float> out(n);
  const std::string err = apply_msg(m, out);
  CHECK(err.find(a) != std::string::npos && err.find(b) != std::string::npos,
        "want '%s' and '%s' in: %s", a, b, err.c_str());
}

// A CONTIGUOUS message of k entries from `first` (first + k may pass n: validate() must refuse).
Msg run_with(Encoding e, std::uint32_t first, std::size_t k, std::size_t n) {
  wire::Fields f;
  f.sender = kSender, f.group = kGroup, f.encoding = e, f.n = n, f.k = k, f.bucket = 4;
  f.bits = wire::required_bits(e, 0), f.flags = wire::kFlagContiguous;
  const wire::Layout l = wire::layout(f.encoding, f.n, f.k, f.bits, f.bucket, f.flags);
  Msg m;
  m.resize(wire::kHeaderBytes + l.total);
  std::memset(m.data(), 0, m.words.size() * 8);
  put(m, l.first, std::vector<std::uint32_t>{first});
  if (e == Encoding::kSparseF32) put(m, l.values, std::vector<float>(k, 1.0f));
  wire::encode_header(f, m.data(), m.len);
  return m;
}

void test_bad_flags_and_first() {
  for (Encoding e : kSparse) {
    const Case run = make(e, 11, 0, true), explicit_idx = make(e, 11);
    const std::uint64_t k = (11 + 1) / 2;
    expect_text(reseal(run.msg, 2, k), 11, "flags is 2", "expected 0 or 1");
    expect_text(reseal(run.msg, 0x81, k), 11, "flags is 129", "expected 0 or 1");
    expect_text(reseal(run.msg, 0, k), 11, "payload_bytes", "flags = 0");
    expect_text(reseal(explicit_idx.msg, 1, k), 11, "payload_bytes", "flags = 1");
    expect_text(reseal(make(e, 0).msg, 1, 0), 0, "k is 0", ">= 1 with flags CONTIGUOUS");
    expect_text(run_with(e, 9, 3, 11), 11, "first is 9", "<= n - k = 8");
    expect_text(run_with(e, 0xffffffffu, 1, 11), 11, "first is 4294967295", "<= n - k = 10");
    std::vector<float> out(11, 0.0f);
    CHECK(apply_msg(run_with(e, 8, 3, 11), out).empty(), "the last run in range applies");
    for (std::size_t i = 0; i < 11; ++i)
      CHECK((out[i] != 0.0f) == (i >= 8) || e == Encoding::kSparseQsgd8, "run 8..10: out[%zu]",
            i);
  }
  const Case dense = make(Encoding::kDenseF32, 11);
  expect_text(reseal(dense.msg, 1, 11), 11, "flags is 1", "sparse encodings 2 and 3");
  // the sender side refuses what validate() would
  const auto refused = [](Encoding e, std::uint64_t k, std::uint8_t flags) {
    try {
      wire::layout(e, 11, k, wire::required_bits(e, e == Encoding::kQsgd ? 8 : 0), 4, flags);
    } catch (const dlion::InvalidArgument&) {
      return true;
    }
    return false;
  };
  CHECK(refused(Encoding::kDenseF32, 11, 1) && refused(Encoding::kQsgd, 11, 1) &&
            refused(Encoding::kSparseF32, 0, 1) && refused(Encoding::kSparseF32, 3, 2) &&
            !refused(Encoding::kSparseF32, 3, 1) && !refused(Encoding::kSparseQsgd8, 3, 1),
        "layout() flag preconditions");
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
  test_consecutive();
  test_encoder_picks_contiguous();
  test_every_byte_change();
  test_misaddressed();
  test_bad_indices();
  test_bad_flags_and_first();
  test_receiver_misuse();
  std::printf("wire_test: ok\n");
  return 0;
}
