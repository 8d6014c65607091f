// pybind11 module vocabshrink._core: converts arrays and errors, releases the
// GIL around the work, and holds no algorithm of its own.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "offset_align.hpp"
#include "span_align.hpp"
#include "split_table.hpp"
#include "splitter.hpp"
#include "token_scheme.hpp"

namespace py = pybind11;
using namespace vs;

namespace {

SchemeSpec make_spec(const std::string& scheme, const std::string& prefix, const std::string& replacement) {
  SchemeSpec s;
  s.scheme = parse_scheme(scheme);
  s.continuation_prefix = prefix;
  s.metaspace_replacement = replacement;
  return s;
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// A 1-D contiguous array of exactly dtype T (no silent casts).
template <class T>
py::array_t<T, py::array::c_style> exact_1d(const py::array& a, const char* name) {
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " must have dtype " + py::str(py::dtype::of<T>()).cast<std::string>() +
                         ", got " + dtype_name(a));
  if (a.ndim() != 1) throw py::type_error(std::string(name) + " must be 1-D, got " + std::to_string(a.ndim()) + "-D");
  return py::array_t<T, py::array::c_style>::ensure(a);
}

template <class T>
T* writable_buffer(const py::array& a, const char* name, int64_t need) {
  auto arr = exact_1d<T>(a, name);
  if (!arr.writeable() || arr.ptr() != a.ptr())
    throw py::type_error(std::string(name) + " must be a writable C-contiguous buffer");
  if (arr.shape(0) < need)
    throw py::value_error(std::string(name) + " holds " + std::to_string(arr.shape(0)) + " elements, needs " +
                          std::to_string(need));
  return arr.mutable_data();
}

// Runs f with the GIL released; C++ errors a caller can cause become ValueError.
template <class F>
auto without_gil(F&& f) {
  try {
    py::gil_scoped_release release;
    return f();
  } catch (const std::out_of_range& e) {
    throw py::value_error(e.what());
  } catch (const std::length_error& e) {
    throw py::value_error(e.what());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

std::vector<int32_t> split_or_none_impl(const Splitter& s, const std::string& surface, bool word_start, bool& ok) {
  std::vector<int32_t> out;
  ok = s.split(surface, word_start, out);
  return out;
}

// SpanAligner plus a lock, so that two Python threads sharing an aligner
// cannot interleave while the GIL is released.
struct PySpanAligner {
  SpanAligner core;
  std::vector<int64_t> lengths;  // reused scratch
  std::mutex mu;
  PySpanAligner(std::vector<int64_t> off, std::vector<int32_t> ids, int32_t pad, int64_t vocab)
      : core(std::move(off), std::move(ids), pad, vocab) {}
};

template <class Id>
py::tuple align_typed(PySpanAligner& self, const py::array& teacher_ids, const py::object& lengths_obj,
                      const py::object& mask_obj, int64_t max_length, bool mean, const py::tuple& outs) {
  auto ids = py::array_t<Id, py::array::c_style>::ensure(teacher_ids);
  const int64_t b = ids.shape(0), lt = ids.shape(1);
  const Id* idp = ids.data();
  std::lock_guard<std::mutex> lock(self.mu);
  if (self.lengths.size() < static_cast<std::size_t>(b)) self.lengths.resize(b);
  int64_t* lens = self.lengths.data();
  if (!lengths_obj.is_none()) {
    py::array la = py::array::ensure(lengths_obj);
    if (!la || la.ndim() != 1 || la.shape(0) != b)
      throw py::value_error("lengths must be a 1-D array of " + std::to_string(b) + " row lengths");
    if (la.dtype().is(py::dtype::of<int64_t>())) {
      auto l = py::array_t<int64_t, py::array::c_style>::ensure(la);
      std::copy(l.data(), l.data() + b, lens);
    } else if (la.dtype().is(py::dtype::of<int32_t>())) {
      auto l = py::array_t<int32_t, py::array::c_style>::ensure(la);
      std::copy(l.data(), l.data() + b, lens);
    } else {
      throw py::type_error("lengths must have dtype int32 or int64, got " + dtype_name(la));
    }
  } else if (!mask_obj.is_none()) {
    py::array m = py::array::ensure(mask_obj);
    if (!m || m.ndim() != 2 || m.shape(0) != b || m.shape(1) != lt)
      throw py::value_error("attention_mask must have the shape of teacher_ids (" + std::to_string(b) + ", " +
                            std::to_string(lt) + ")");
    auto run = [&](auto tag) {
      using M = decltype(tag);
      auto mc = py::array_t<M, py::array::c_style>::ensure(m);
      without_gil([&] {
        mask_lengths<M>(mc.data(), b, lt, lens);
        return 0;
      });
    };
    const auto dt = m.dtype();
    if (dt.is(py::dtype::of<bool>())) run(bool{});
    else if (dt.is(py::dtype::of<int8_t>())) run(int8_t{});
    else if (dt.is(py::dtype::of<uint8_t>())) run(uint8_t{});
    else if (dt.is(py::dtype::of<int32_t>())) run(int32_t{});
    else if (dt.is(py::dtype::of<int64_t>())) run(int64_t{});
    else throw py::type_error("attention_mask must have dtype bool, int8, uint8, int32 or int64, got " + dtype_name(m));
  } else {
    std::fill(lens, lens + b, lt);
  }
  const SpanSizes sz = without_gil([&] { return self.core.measure<Id>(idp, b, lt, lens, max_length); });
  if (outs.size() != 9) throw py::value_error("outs must hold 9 buffers");
  const int64_t ns = b * sz.ls, nt = b * lt;
  // Buffers too small: report the sizes, write nothing; the caller grows them.
  auto cap = [&](int k) { return py::array(outs[k]).shape(0); };
  if (cap(0) < ns || cap(1) < ns || cap(2) < ns || cap(3) < nt || cap(4) < nt || cap(5) < nt || cap(6) < nt + 1 ||
      cap(7) < sz.nnz || cap(8) < sz.nnz)
    return py::make_tuple(sz.ls, sz.nnz, false);
  SpanOutputs o{};
  o.student_ids = writable_buffer<int32_t>(outs[0], "student_ids", ns);
  o.student_mask = reinterpret_cast<uint8_t*>(writable_buffer<bool>(outs[1], "student_mask", ns));
  o.segment_ids = writable_buffer<int32_t>(outs[2], "segment_ids", ns);
  o.span_start = writable_buffer<int32_t>(outs[3], "span_start", nt);
  o.span_end = writable_buffer<int32_t>(outs[4], "span_end", nt);
  o.teacher_keep = reinterpret_cast<uint8_t*>(writable_buffer<bool>(outs[5], "teacher_keep", nt));
  o.indptr = writable_buffer<int32_t>(outs[6], "indptr", nt + 1);
  o.indices = writable_buffer<int32_t>(outs[7], "indices", sz.nnz);
  o.values = writable_buffer<float>(outs[8], "values", sz.nnz);
  without_gil([&] {
    self.core.fill<Id>(idp, b, lt, lens, max_length, mean, sz, o);
    return 0;
  });
  return py::make_tuple(sz.ls, sz.nnz, true);
}

py::tuple align_dispatch(PySpanAligner& self, const py::array& teacher_ids, const py::object& lengths,
                         const py::object& mask, int64_t max_length, bool mean, const py::tuple& outs) {
  if (teacher_ids.ndim() != 2)
    throw py::type_error("teacher_ids must be 2-D (batch, length), got " + std::to_string(teacher_ids.ndim()) + "-D");
  if (teacher_ids.dtype().is(py::dtype::of<int32_t>()))
    return align_typed<int32_t>(self, teacher_ids, lengths, mask, max_length, mean, outs);
  if (teacher_ids.dtype().is(py::dtype::of<int64_t>()))
    return align_typed<int64_t>(self, teacher_ids, lengths, mask, max_length, mean, outs);
  throw py::type_error("teacher_ids must have dtype int32 or int64, got " + dtype_name(teacher_ids));
}

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(static_cast<py::ssize_t>(heap->size()), heap->data(), owner);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "vocabshrink C++ core: greedy splitting, split tables, span and offset alignment";

  m.def(
      "parse_token",
      [](const std::string& token, const std::string& scheme, const std::string& prefix, const std::string& repl) {
        const Surface s = parse_token(token, make_spec(scheme, prefix, repl));
        return py::make_tuple(py::bytes(s.text), s.word_start, s.valid);
      },
      py::arg("token"), py::arg("scheme"), py::arg("continuation_prefix") = "##",
      py::arg("metaspace_replacement") = "\u2581",
      "A token string -> (surface bytes, starts a word, readable in the scheme).");

  py::class_<Splitter>(m, "Splitter")
      .def(py::init([](const std::vector<std::string>& vocab, const std::string& scheme, const std::string& prefix,
                       const std::string& repl, int32_t unk_id, const std::vector<int32_t>& special_ids) {
             try {
               return new Splitter(vocab, make_spec(scheme, prefix, repl), unk_id, special_ids);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("vocab"), py::arg("scheme"), py::arg("continuation_prefix") = "##",
           py::arg("metaspace_replacement") = "\u2581", py::arg("unk_id") = -1,
           py::arg("special_ids") = std::vector<int32_t>{})
      .def(
          "split",
          [](const Splitter& s, const py::bytes& surface, bool word_start) -> py::object {
            bool ok = false;
            auto out = split_or_none_impl(s, std::string(surface), word_start, ok);
            if (!ok) return py::none();
            return py::cast(out);
          },
          py::arg("surface"), py::arg("word_start"),
          "Pieces of a surface (UTF-8 bytes), or None when some position matches nothing.")
      .def_property_readonly("vocab_size", &Splitter::vocab_size)
      .def_property_readonly("unk_id", &Splitter::unk_id)
      .def_property_readonly("has_byte_fallback", &Splitter::has_byte_fallback);

  m.def(
      "build_split_table",
      [](const Splitter& target, const std::vector<std::string>& source_vocab, const std::string& scheme,
         const std::string& prefix, const std::string& repl, const py::array& forced) {
        auto f = exact_1d<int32_t>(forced, "forced");
        std::vector<int32_t> fv(f.data(), f.data() + f.shape(0));
        const SchemeSpec spec = make_spec(scheme, prefix, repl);
        SplitTable t = without_gil([&] { return build_split_table(target, source_vocab, spec, fv); });
        return py::make_tuple(to_numpy(std::move(t.offsets)), to_numpy(std::move(t.ids)));
      },
      py::arg("target"), py::arg("source_vocab"), py::arg("scheme"), py::arg("continuation_prefix") = "##",
      py::arg("metaspace_replacement") = "\u2581", py::arg("forced"),
      "Split every source token -> (offsets int64[V+1], ids int32[nnz]).");

  py::class_<PySpanAligner>(m, "SpanAligner")
      .def(py::init([](const py::array& offsets, const py::array& ids, int32_t pad_id, int64_t vocab) {
             auto o = exact_1d<int64_t>(offsets, "offsets");
             auto i = exact_1d<int32_t>(ids, "ids");
             try {
               return new PySpanAligner(std::vector<int64_t>(o.data(), o.data() + o.shape(0)),
                                        std::vector<int32_t>(i.data(), i.data() + i.shape(0)), pad_id, vocab);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("offsets"), py::arg("ids"), py::arg("pad_id"), py::arg("target_vocab_size"))
      .def_property_readonly("source_vocab_size", [](PySpanAligner& s) { return s.core.source_vocab_size(); })
      .def("align_into", &align_dispatch, py::arg("teacher_ids"), py::arg("lengths"), py::arg("attention_mask"),
           py::arg("max_length"), py::arg("mean"), py::arg("outs"),
           "Expand a batch into 9 flat buffers (student_ids, student_mask, segment_ids, span_start, span_end, "
           "teacher_keep, indptr, indices, values). Returns (Ls, nnz, written); written is False, and nothing is "
           "touched, when a buffer is too small.");

  m.def(
      "offset_chunks",
      [](const py::array& a_end, const py::array& a_special, const py::array& b_end, const py::array& b_special) {
        auto ae = exact_1d<int64_t>(a_end, "a_end");
        auto as = exact_1d<bool>(a_special, "a_special");
        auto be = exact_1d<int64_t>(b_end, "b_end");
        auto bs = exact_1d<bool>(b_special, "b_special");
        if (ae.shape(0) != as.shape(0) || be.shape(0) != bs.shape(0))
          throw py::value_error("each side needs one special flag per token end");
        std::vector<int32_t> ra, rb;
        without_gil([&] {
          offset_chunks(ae.data(), reinterpret_cast<const uint8_t*>(as.data()), ae.shape(0), be.data(),
                        reinterpret_cast<const uint8_t*>(bs.data()), be.shape(0), ra, rb);
          return 0;
        });
        return py::make_tuple(to_numpy(std::move(ra)), to_numpy(std::move(rb)));
      },
      py::arg("a_end"), py::arg("a_special"), py::arg("b_end"), py::arg("b_special"),
      "Common chunks of two tokenizations -> (a_chunk_ends int32, b_chunk_ends int32).");
}
