// pybind11 module vocabshrink._core: converts arrays and errors, releases the
// GIL around the work, and holds no algorithm of its own.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <functional>
#include <memory>
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

// The split table is read-only after construction and every call keeps its
// scratch on its own stack, so threads may share an aligner with no lock: a
// lock taken while attached to the interpreter is how the bindings once
// deadlocked (one thread held it waiting for the GIL, the other held the GIL
// waiting for it).
struct PySpanAligner {
  SpanAligner core;
  PySpanAligner(std::vector<int64_t> off, std::vector<int32_t> ids, int32_t pad, int64_t vocab)
      : core(std::move(off), std::move(ids), pad, vocab) {}
};

// Row lengths as the GIL-free part needs them: copied now, or a mask to scan later.
struct RowLengths {
  std::vector<int64_t> lens;
  std::function<void(int64_t*)> from_mask;  // set when the lengths come from a mask
};

template <class M>
std::function<void(int64_t*)> mask_scan(const py::array& m, int64_t b, int64_t lt) {
  auto mc = py::array_t<M, py::array::c_style>::ensure(m);
  const M* p = mc.data();
  // The lambda keeps the array alive until the released region is done with it.
  return [mc, p, b, lt](int64_t* lens) { mask_lengths<M>(p, b, lt, lens); };
}

RowLengths row_lengths(int64_t b, int64_t lt, const py::object& lengths_obj, const py::object& mask_obj) {
  RowLengths r;
  r.lens.assign(static_cast<std::size_t>(b), lt);
  if (!lengths_obj.is_none()) {
    py::array la = py::array::ensure(lengths_obj);
    if (!la || la.ndim() != 1 || la.shape(0) != b)
      throw py::value_error("lengths must be a 1-D array of " + std::to_string(b) + " row lengths");
    if (la.dtype().is(py::dtype::of<int64_t>())) {
      auto l = py::array_t<int64_t, py::array::c_style>::ensure(la);
      std::copy(l.data(), l.data() + b, r.lens.begin());
    } else if (la.dtype().is(py::dtype::of<int32_t>())) {
      auto l = py::array_t<int32_t, py::array::c_style>::ensure(la);
      std::copy(l.data(), l.data() + b, r.lens.begin());
    } else {
      throw py::type_error("lengths must have dtype int32 or int64, got " + dtype_name(la));
    }
  } else if (!mask_obj.is_none()) {
    py::array m = py::array::ensure(mask_obj);
    if (!m || m.ndim() != 2 || m.shape(0) != b || m.shape(1) != lt)
      throw py::value_error("attention_mask must have the shape of teacher_ids (" + std::to_string(b) + ", " +
                            std::to_string(lt) + ")");
    const auto dt = m.dtype();
    if (dt.is(py::dtype::of<bool>())) r.from_mask = mask_scan<bool>(m, b, lt);
    else if (dt.is(py::dtype::of<int8_t>())) r.from_mask = mask_scan<int8_t>(m, b, lt);
    else if (dt.is(py::dtype::of<uint8_t>())) r.from_mask = mask_scan<uint8_t>(m, b, lt);
    else if (dt.is(py::dtype::of<int32_t>())) r.from_mask = mask_scan<int32_t>(m, b, lt);
    else if (dt.is(py::dtype::of<int64_t>())) r.from_mask = mask_scan<int64_t>(m, b, lt);
    else throw py::type_error("attention_mask must have dtype bool, int8, uint8, int32 or int64, got " + dtype_name(m));
  }
  return r;
}

// The 9 output buffers, checked and resolved to pointers while the GIL is held.
struct OutBuffers {
  SpanOutputs ptr{};
  int64_t cap[9]{};
};

template <class T>
T* out_buffer(const py::tuple& outs, int k, const char* name, int64_t* cap) {
  const py::object obj = outs[k];
  if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(name) + " must be a numpy array");
  const auto a = py::reinterpret_borrow<py::array>(obj);
  auto arr = exact_1d<T>(a, name);
  if (!arr.writeable() || arr.ptr() != a.ptr())
    throw py::type_error(std::string(name) + " must be a writable C-contiguous buffer");
  *cap = arr.shape(0);
  return arr.mutable_data();
}

OutBuffers out_buffers(const py::tuple& outs) {
  if (outs.size() != 9) throw py::value_error("outs must hold 9 buffers");
  OutBuffers o;
  o.ptr.student_ids = out_buffer<int32_t>(outs, 0, "student_ids", &o.cap[0]);
  o.ptr.student_mask = reinterpret_cast<uint8_t*>(out_buffer<bool>(outs, 1, "student_mask", &o.cap[1]));
  o.ptr.segment_ids = out_buffer<int32_t>(outs, 2, "segment_ids", &o.cap[2]);
  o.ptr.span_start = out_buffer<int32_t>(outs, 3, "span_start", &o.cap[3]);
  o.ptr.span_end = out_buffer<int32_t>(outs, 4, "span_end", &o.cap[4]);
  o.ptr.teacher_keep = reinterpret_cast<uint8_t*>(out_buffer<bool>(outs, 5, "teacher_keep", &o.cap[5]));
  o.ptr.indptr = out_buffer<int32_t>(outs, 6, "indptr", &o.cap[6]);
  o.ptr.indices = out_buffer<int32_t>(outs, 7, "indices", &o.cap[7]);
  o.ptr.values = out_buffer<float>(outs, 8, "values", &o.cap[8]);
  return o;
}

bool fits(const OutBuffers& o, int64_t b, int64_t lt, const SpanSizes& sz) {
  const int64_t ns = b * sz.ls, nt = b * lt;
  const int64_t need[9] = {ns, ns, ns, nt, nt, nt, nt + 1, sz.nnz, sz.nnz};
  for (int k = 0; k < 9; ++k)
    if (o.cap[k] < need[k]) return false;
  return true;
}

// Buffers of the size a result needs, with headroom so that a slowly growing
// student length does not reallocate at every call. Allocated without the GIL;
// wrapped as arrays once it is held again.
struct FreshBuffers {
  std::unique_ptr<int32_t[]> i32[6];  // student_ids, segment_ids, span_start, span_end, indptr, indices
  std::unique_ptr<uint8_t[]> u8[2];   // student_mask, teacher_keep
  std::unique_ptr<float[]> values;
  OutBuffers out;
};

int64_t with_headroom(int64_t n) { return n + n / 4 + 16; }

std::unique_ptr<FreshBuffers> allocate(int64_t b, int64_t lt, const SpanSizes& sz) {
  auto f = std::make_unique<FreshBuffers>();
  const int64_t ns = b * sz.ls, nt = b * lt;
  const int64_t need[9] = {ns, ns, ns, nt, nt, nt, nt + 1, sz.nnz, sz.nnz};
  for (int k = 0; k < 9; ++k) f->out.cap[k] = with_headroom(need[k]);
  auto i32 = [&](int slot, int k) {
    f->i32[slot].reset(new int32_t[f->out.cap[k]]);
    return f->i32[slot].get();
  };
  auto u8 = [&](int slot, int k) {
    f->u8[slot].reset(new uint8_t[f->out.cap[k]]);
    return f->u8[slot].get();
  };
  SpanOutputs& o = f->out.ptr;
  o.student_ids = i32(0, 0);
  o.student_mask = u8(0, 1);
  o.segment_ids = i32(1, 2);
  o.span_start = i32(2, 3);
  o.span_end = i32(3, 4);
  o.teacher_keep = u8(1, 5);
  o.indptr = i32(4, 6);
  o.indices = i32(5, 7);
  f->values.reset(new float[f->out.cap[8]]);
  o.values = f->values.get();
  return f;
}

// A heap array handed to numpy, which frees it with the array.
template <class T>
py::array adopt(std::unique_ptr<T[]>& p, int64_t n, const py::dtype& dt) {
  T* raw = p.release();
  py::capsule owner(raw, [](void* q) { delete[] static_cast<T*>(q); });
  return py::array(dt, {static_cast<py::ssize_t>(n)}, {}, raw, owner);
}

py::tuple as_arrays(FreshBuffers& f) {
  const auto i32 = py::dtype::of<int32_t>(), bl = py::dtype::of<bool>();
  const int64_t* c = f.out.cap;
  return py::make_tuple(adopt(f.i32[0], c[0], i32), adopt(f.u8[0], c[1], bl), adopt(f.i32[1], c[2], i32),
                        adopt(f.i32[2], c[3], i32), adopt(f.i32[3], c[4], i32), adopt(f.u8[1], c[5], bl),
                        adopt(f.i32[4], c[6], i32), adopt(f.i32[5], c[7], i32),
                        adopt(f.values, c[8], py::dtype::of<float>()));
}

template <class Id>
py::tuple align_typed(PySpanAligner& self, const py::array& teacher_ids, const py::object& lengths_obj,
                      const py::object& mask_obj, int64_t max_length, bool mean, const py::tuple& outs) {
  auto ids = py::array_t<Id, py::array::c_style>::ensure(teacher_ids);
  const int64_t b = ids.shape(0), lt = ids.shape(1);
  const Id* idp = ids.data();
  RowLengths rows = row_lengths(b, lt, lengths_obj, mask_obj);
  const OutBuffers given = out_buffers(outs);
  // One released region: lengths, one measure, and the fill, into the caller's
  // buffers when they hold the result, else into new ones returned in their place.
  std::unique_ptr<FreshBuffers> fresh;
  const SpanSizes sz = without_gil([&] {
    if (rows.from_mask) rows.from_mask(rows.lens.data());
    const SpanSizes s = self.core.measure<Id>(idp, b, lt, rows.lens.data(), max_length);
    if (!fits(given, b, lt, s)) fresh = allocate(b, lt, s);
    self.core.fill<Id>(idp, b, lt, rows.lens.data(), max_length, mean, s, fresh ? fresh->out.ptr : given.ptr);
    return s;
  });
  return py::make_tuple(sz.ls, sz.nnz, fresh ? py::object(as_arrays(*fresh)) : py::object(outs));
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
           "teacher_keep, indptr, indices, values). Returns (Ls, nnz, buffers): `outs` itself when its buffers "
           "held the result, else 9 new, larger buffers holding it (`outs` untouched). Safe to call from "
           "several threads on one aligner.");

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
