#include "engine/pickle_reader.h"

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

#include "absl/strings/str_cat.h"

namespace mamba::engine {
namespace {

using kernels::DType;

// Limits far above any real state dict (a 7B model's data.pkl: ~1 MB, ~10k values), low
// enough that no input can exhaust memory.
constexpr size_t kMaxValues = size_t{1} << 22;
constexpr size_t kMaxStack = size_t{1} << 20;
constexpr size_t kMaxMarks = 4096;
constexpr size_t kMaxMemo = size_t{1} << 22;
constexpr uint64_t kMaxString = uint64_t{1} << 20;
constexpr uint64_t kMaxElements = uint64_t{1} << 48;

enum class Fn : uint8_t {
  kOrderedDict,
  kRebuildTensorV2,
  kRebuildTensor,
  kRebuildParameter,
  kStorageType
};

// torch.<Name>Storage classes: those we load, and others known so that the error can name the
// tensor and its dtype. They are only ever tags inside a persistent id, never called.
struct StorageType {
  const char* name;
  const char* dtype_name;
  std::optional<DType> dtype;
};
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", "float32", DType::kF32},
    {"HalfStorage", "float16", DType::kF16},
    {"BFloat16Storage", "bfloat16", DType::kBF16},
    {"DoubleStorage", "float64", std::nullopt},
    {"LongStorage", "int64", std::nullopt},
    {"IntStorage", "int32", std::nullopt},
    {"ShortStorage", "int16", std::nullopt},
    {"CharStorage", "int8", std::nullopt},
    {"ByteStorage", "uint8", std::nullopt},
    {"BoolStorage", "bool", std::nullopt},
    {"ComplexFloatStorage", "complex64", std::nullopt},
    {"ComplexDoubleStorage", "complex128", std::nullopt},
};

struct Value {
  enum class Kind : uint8_t {
    kNone,
    kBool,
    kInt,
    kFloat,
    kStr,
    kTuple,
    kList,
    kDict,
    kGlobal,
    kStorage,
    kTensor
  };
  Kind kind = Kind::kNone;
  int64_t i = 0;              // int, bool; storage: numel; tensor: storage offset
  std::string s;              // str; global: "module.name"; storage: key
  std::vector<Value*> items;  // tuple, list; dict: key0, value0, key1, ...; tensor: {storage}
  Fn fn = Fn::kOrderedDict;   // global
  const StorageType* storage = nullptr;  // global kStorageType, storage
  std::vector<int64_t> shape, stride;    // tensor
};
using Kind = Value::Kind;

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kStr:
      return "str";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "global";
    case Kind::kStorage:
      return "storage";
    case Kind::kTensor:
      return "tensor";
  }
  return "?";
}

absl::Status Refuse(const std::string& what) { return absl::InvalidArgumentError(what); }

class Interpreter {
 public:
  explicit Interpreter(std::span<const std::byte> in) : in_(in) {}
  absl::StatusOr<const Value*> Run();

 private:
  absl::Status Step(uint8_t op);
  absl::StatusOr<uint64_t> Read(int n);  // little-endian
  absl::StatusOr<std::string> ReadString(uint64_t n);
  absl::StatusOr<std::string> ReadLine();
  absl::StatusOr<Value*> New(Kind k);
  absl::Status Push(Value* v);
  absl::StatusOr<Value*> Pop();
  absl::StatusOr<std::vector<Value*>> PopToMark();
  absl::Status PushInt(int64_t v);
  absl::Status PushString(uint64_t n);
  absl::Status PushGlobal(const std::string& module, const std::string& name);
  absl::Status PushTuple(std::vector<Value*> items);
  absl::Status Memo(uint64_t index);
  absl::Status Get(uint64_t index);
  absl::Status Reduce();
  absl::Status PersistentLoad();
  absl::Status AddItems(std::vector<Value*> items, Kind want);
  absl::Status Build();

  std::span<const std::byte> in_;
  size_t pos_ = 0;
  std::vector<std::unique_ptr<Value>> arena_;  // owns every value (cycles are harmless)
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
};

absl::StatusOr<uint64_t> Interpreter::Read(int n) {
  if (in_.size() - pos_ < static_cast<size_t>(n)) return Refuse("pickle truncated");
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(in_[pos_ + i]);
  pos_ += n;
  return v;
}

absl::StatusOr<std::string> Interpreter::ReadString(uint64_t n) {
  if (n > kMaxString) return Refuse(absl::StrCat("pickle string of ", n, " bytes is too long"));
  if (in_.size() - pos_ < n) return Refuse("pickle truncated inside a string");
  std::string s(reinterpret_cast<const char*>(in_.data() + pos_), n);
  pos_ += n;
  return s;
}

absl::StatusOr<std::string> Interpreter::ReadLine() {
  std::string s;
  while (pos_ < in_.size() && s.size() < 256) {
    const char c = static_cast<char>(in_[pos_++]);
    if (c == '\n') return s;
    s.push_back(c);
  }
  return Refuse("pickle GLOBAL name unterminated or too long");
}

absl::StatusOr<Value*> Interpreter::New(Kind k) {
  if (arena_.size() >= kMaxValues) return Refuse("pickle has too many values");
  arena_.push_back(std::make_unique<Value>());
  arena_.back()->kind = k;
  return arena_.back().get();
}

absl::Status Interpreter::Push(Value* v) {
  if (stack_.size() >= kMaxStack) return Refuse("pickle stack too deep");
  stack_.push_back(v);
  return absl::OkStatus();
}

absl::StatusOr<Value*> Interpreter::Pop() {
  if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) {
    return Refuse("pickle stack underflow");
  }
  Value* v = stack_.back();
  stack_.pop_back();
  return v;
}

absl::StatusOr<std::vector<Value*>> Interpreter::PopToMark() {
  if (marks_.empty()) return Refuse("pickle has no MARK to pop to");
  std::vector<Value*> items(stack_.begin() + static_cast<ptrdiff_t>(marks_.back()), stack_.end());
  stack_.resize(marks_.back());
  marks_.pop_back();
  return items;
}

absl::Status Interpreter::PushInt(int64_t v) {
  absl::StatusOr<Value*> x = New(Kind::kInt);
  if (!x.ok()) return x.status();
  (*x)->i = v;
  return Push(*x);
}

absl::Status Interpreter::PushString(uint64_t n) {
  absl::StatusOr<std::string> s = ReadString(n);
  if (!s.ok()) return s.status();
  absl::StatusOr<Value*> x = New(Kind::kStr);
  if (!x.ok()) return x.status();
  (*x)->s = std::move(*s);
  return Push(*x);
}

absl::Status Interpreter::PushGlobal(const std::string& module, const std::string& name) {
  const std::string full = absl::StrCat(module, ".", name);
  std::optional<Fn> fn;
  const StorageType* storage = nullptr;
  if (full == "collections.OrderedDict") fn = Fn::kOrderedDict;
  if (full == "torch._utils._rebuild_tensor_v2") fn = Fn::kRebuildTensorV2;
  if (full == "torch._utils._rebuild_tensor") fn = Fn::kRebuildTensor;
  if (full == "torch._utils._rebuild_parameter") fn = Fn::kRebuildParameter;
  for (const StorageType& t : kStorageTypes) {
    if (module == "torch" && name == t.name) {
      fn = Fn::kStorageType;
      storage = &t;
    }
  }
  if (!fn) {
    return Refuse(absl::StrCat("pickle references the global '", full,
                               "', which a state dict of tensors never needs: refused (loading a "
                               "model file never runs code)"));
  }
  absl::StatusOr<Value*> g = New(Kind::kGlobal);
  if (!g.ok()) return g.status();
  (*g)->s = full;
  (*g)->fn = *fn;
  (*g)->storage = storage;
  return Push(*g);
}

absl::Status Interpreter::PushTuple(std::vector<Value*> items) {
  absl::StatusOr<Value*> t = New(Kind::kTuple);
  if (!t.ok()) return t.status();
  (*t)->items = std::move(items);
  return Push(*t);
}

absl::Status Interpreter::Memo(uint64_t index) {
  if (stack_.empty()) return Refuse("pickle memoizes an empty stack");
  if (memo_.size() >= kMaxMemo && !memo_.count(index)) return Refuse("pickle memo too large");
  memo_[index] = stack_.back();
  return absl::OkStatus();
}

absl::Status Interpreter::Get(uint64_t index) {
  auto it = memo_.find(index);
  if (it == memo_.end()) return Refuse(absl::StrCat("pickle memo key ", index, " is unset"));
  return Push(it->second);
}

absl::Status Interpreter::AddItems(std::vector<Value*> items, Kind want) {
  if (stack_.empty() || stack_.back()->kind != want) {
    return Refuse(absl::StrCat("pickle adds items to a ",
                               stack_.empty() ? "missing value" : KindName(stack_.back()->kind),
                               ", not a ", KindName(want)));
  }
  if (want == Kind::kDict && items.size() % 2 != 0) return Refuse("pickle SETITEMS of odd length");
  std::vector<Value*>& to = stack_.back()->items;
  if (to.size() + items.size() > kMaxValues) return Refuse("pickle container too large");
  to.insert(to.end(), items.begin(), items.end());
  return absl::OkStatus();
}

// BUILD as torch uses it: a state dict (an OrderedDict) gets its attributes (`_metadata`, the
// modules' versions), which a loader ignores. Nothing else may be built.
absl::Status Interpreter::Build() {
  absl::StatusOr<Value*> state = Pop();
  if (!state.ok()) return state.status();
  if (stack_.empty() || stack_.back()->kind != Kind::kDict ||
      ((*state)->kind != Kind::kDict && (*state)->kind != Kind::kNone)) {
    return Refuse("pickle BUILD of something other than a dict's attributes");
  }
  return absl::OkStatus();
}

absl::Status Interpreter::PersistentLoad() {
  absl::StatusOr<Value*> pid = Pop();
  if (!pid.ok()) return pid.status();
  const std::vector<Value*>& t = (*pid)->items;
  if ((*pid)->kind != Kind::kTuple || t.size() != 5 || t[0]->kind != Kind::kStr ||
      t[0]->s != "storage" || t[1]->kind != Kind::kGlobal || t[1]->fn != Fn::kStorageType ||
      t[2]->kind != Kind::kStr || t[4]->kind != Kind::kInt || t[4]->i < 0) {
    return Refuse(
        "pickle persistent id is not ('storage', torch.<Type>Storage, key, location, numel)");
  }
  absl::StatusOr<Value*> s = New(Kind::kStorage);
  if (!s.ok()) return s.status();
  (*s)->storage = t[1]->storage;
  (*s)->s = t[2]->s;
  (*s)->i = t[4]->i;
  return Push(*s);
}

// Reads a tuple of ints (a tensor's size or stride).
bool IntTuple(const Value* v, std::vector<int64_t>* out) {
  if (v->kind != Kind::kTuple) return false;
  for (const Value* x : v->items) {
    if (x->kind != Kind::kInt) return false;
    out->push_back(x->i);
  }
  return true;
}

absl::Status Interpreter::Reduce() {
  absl::StatusOr<Value*> args = Pop();
  if (!args.ok()) return args.status();
  absl::StatusOr<Value*> fn = Pop();
  if (!fn.ok()) return fn.status();
  if ((*fn)->kind != Kind::kGlobal || (*args)->kind != Kind::kTuple) {
    return Refuse("pickle REDUCE of something other than an allowed global and a tuple");
  }
  const std::vector<Value*>& a = (*args)->items;
  switch ((*fn)->fn) {
    case Fn::kOrderedDict: {
      if (!a.empty()) return Refuse("pickle calls collections.OrderedDict with arguments");
      absl::StatusOr<Value*> d = New(Kind::kDict);
      if (!d.ok()) return d.status();
      return Push(*d);
    }
    case Fn::kRebuildParameter:  // (data, requires_grad, backward_hooks)
      if (a.size() != 3 || a[0]->kind != Kind::kTensor) {
        return Refuse("pickle calls torch._utils._rebuild_parameter without a tensor");
      }
      return Push(a[0]);
    case Fn::kRebuildTensor:      // (storage, storage_offset, size, stride)
    case Fn::kRebuildTensorV2: {  // + (requires_grad, backward_hooks[, metadata])
      const bool v2 = (*fn)->fn == Fn::kRebuildTensorV2;
      absl::StatusOr<Value*> t = New(Kind::kTensor);
      if (!t.ok()) return t.status();
      if ((v2 ? (a.size() != 6 && a.size() != 7) : a.size() != 4) || a[0]->kind != Kind::kStorage ||
          a[1]->kind != Kind::kInt || !IntTuple(a[2], &(*t)->shape) ||
          !IntTuple(a[3], &(*t)->stride)) {
        return Refuse(absl::StrCat("pickle calls ", (*fn)->s,
                                   " without (storage, offset, size, stride, ...)"));
      }
      (*t)->items = {a[0]};
      (*t)->i = a[1]->i;
      return Push(*t);
    }
    case Fn::kStorageType:
      break;
  }
  return Refuse(absl::StrCat("pickle calls ", (*fn)->s, ", which is only a storage tag"));
}

absl::Status Interpreter::Step(uint8_t op) {
  switch (op) {
    case 0x80: {  // PROTO
      absl::StatusOr<uint64_t> v = Read(1);
      if (!v.ok()) return v.status();
      if (*v < 2 || *v > 5) return Refuse(absl::StrCat("pickle protocol ", *v, " unsupported"));
      return absl::OkStatus();
    }
    case 0x95:
      return Read(8).status();  // FRAME: a length hint only
    case '}': {
      auto v = New(Kind::kDict);
      return v.ok() ? Push(*v) : v.status();
    }
    case ']': {
      auto v = New(Kind::kList);
      return v.ok() ? Push(*v) : v.status();
    }
    case ')':
      return PushTuple({});
    case 'N': {
      auto v = New(Kind::kNone);
      return v.ok() ? Push(*v) : v.status();
    }
    case 0x88:    // NEWTRUE
    case 0x89: {  // NEWFALSE
      auto v = New(Kind::kBool);
      if (!v.ok()) return v.status();
      (*v)->i = op == 0x88;
      return Push(*v);
    }
    case '(':
      if (marks_.size() >= kMaxMarks) return Refuse("pickle MARKs nested too deep");
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case 'X':
    case 0x8c:
    case 0x8d: {  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
      absl::StatusOr<uint64_t> n = Read(op == 'X' ? 4 : op == 0x8c ? 1 : 8);
      return n.ok() ? PushString(*n) : n.status();
    }
    case 'K':
    case 'M': {  // BININT1, BININT2
      absl::StatusOr<uint64_t> v = Read(op == 'K' ? 1 : 2);
      return v.ok() ? PushInt(static_cast<int64_t>(*v)) : v.status();
    }
    case 'J': {  // BININT: signed 32-bit
      absl::StatusOr<uint64_t> v = Read(4);
      return v.ok() ? PushInt(static_cast<int32_t>(static_cast<uint32_t>(*v))) : v.status();
    }
    case 0x8a: {  // LONG1: n-byte two's complement
      absl::StatusOr<uint64_t> n = Read(1);
      if (!n.ok()) return n.status();
      if (*n > 8) return Refuse("pickle integer wider than 64 bits");
      if (*n == 0) return PushInt(0);
      absl::StatusOr<uint64_t> v = Read(static_cast<int>(*n));
      if (!v.ok()) return v.status();
      const int shift = 64 - 8 * static_cast<int>(*n);  // sign-extend
      return PushInt(static_cast<int64_t>(*v << shift) >> shift);
    }
    case 'G': {  // BINFLOAT: 8 bytes; no state dict value reads it
      absl::StatusOr<uint64_t> v = Read(8);
      if (!v.ok()) return v.status();
      auto x = New(Kind::kFloat);
      return x.ok() ? Push(*x) : x.status();
    }
    case 'q':
    case 'r': {  // BINPUT, LONG_BINPUT
      absl::StatusOr<uint64_t> i = Read(op == 'q' ? 1 : 4);
      return i.ok() ? Memo(*i) : i.status();
    }
    case 0x94:
      return Memo(memo_.size());  // MEMOIZE
    case 'h':
    case 'j': {  // BINGET, LONG_BINGET
      absl::StatusOr<uint64_t> i = Read(op == 'h' ? 1 : 4);
      return i.ok() ? Get(*i) : i.status();
    }
    case 'c': {  // GLOBAL "module\nname\n"
      absl::StatusOr<std::string> module = ReadLine();
      if (!module.ok()) return module.status();
      absl::StatusOr<std::string> name = ReadLine();
      return name.ok() ? PushGlobal(*module, *name) : name.status();
    }
    case 0x93: {  // STACK_GLOBAL
      absl::StatusOr<Value*> name = Pop();
      if (!name.ok()) return name.status();
      absl::StatusOr<Value*> module = Pop();
      if (!module.ok()) return module.status();
      if ((*name)->kind != Kind::kStr || (*module)->kind != Kind::kStr) {
        return Refuse("pickle STACK_GLOBAL of non-strings");
      }
      return PushGlobal((*module)->s, (*name)->s);
    }
    case 't': {
      absl::StatusOr<std::vector<Value*>> items = PopToMark();
      return items.ok() ? PushTuple(std::move(*items)) : items.status();
    }
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1..3
      std::vector<Value*> items(static_cast<size_t>(op - 0x84));
      for (size_t i = items.size(); i-- > 0;) {
        absl::StatusOr<Value*> v = Pop();
        if (!v.ok()) return v.status();
        items[i] = *v;
      }
      return PushTuple(std::move(items));
    }
    case 'R':
      return Reduce();
    case 'Q':
      return PersistentLoad();
    case 'b':
      return Build();
    case 's':
    case 'a': {  // SETITEM, APPEND
      std::vector<Value*> items(op == 's' ? 2 : 1);
      for (size_t i = items.size(); i-- > 0;) {
        absl::StatusOr<Value*> v = Pop();
        if (!v.ok()) return v.status();
        items[i] = *v;
      }
      return AddItems(std::move(items), op == 's' ? Kind::kDict : Kind::kList);
    }
    case 'u':
    case 'e': {  // SETITEMS, APPENDS
      absl::StatusOr<std::vector<Value*>> items = PopToMark();
      if (!items.ok()) return items.status();
      return AddItems(std::move(*items), op == 'u' ? Kind::kDict : Kind::kList);
    }
    default:
      break;
  }
  return Refuse(absl::StrCat("pickle opcode 0x", absl::Hex(op, absl::kZeroPad2), " at offset ",
                             pos_ - 1, " is not one a torch state dict uses: refused"));
}

absl::StatusOr<const Value*> Interpreter::Run() {
  while (pos_ < in_.size()) {
    const auto op = static_cast<uint8_t>(in_[pos_++]);
    if (op == '.') {  // STOP
      if (stack_.size() != 1 || !marks_.empty()) return Refuse("pickle STOP with a bad stack");
      return stack_.back();
    }
    if (absl::Status s = Step(op); !s.ok()) return s;
  }
  return Refuse("pickle truncated (no STOP)");
}

// Checks one state-dict entry and turns it into a PickledTensor.
absl::StatusOr<PickledTensor> ToTensor(const Value& key, const Value& v) {
  if (key.kind != Kind::kStr) return Refuse("state dict key is not a string");
  auto fail = [&](const std::string& what) {
    return Refuse(absl::StrCat("tensor '", key.s, "': ", what));
  };
  if (v.kind != Kind::kTensor) return fail(absl::StrCat("is a ", KindName(v.kind)));
  const Value& storage = *v.items[0];
  const StorageType& type = *storage.storage;
  if (!type.dtype) {
    return fail(absl::StrCat("has dtype ", type.dtype_name, " (torch.", type.name,
                             "): only float32, float16 and bfloat16 are supported"));
  }
  PickledTensor t{key.s, *type.dtype, v.shape, storage.s, static_cast<uint64_t>(storage.i), 0};
  if (v.stride.size() != v.shape.size()) return fail("stride and size differ in length");
  if (v.i < 0) return fail("negative storage offset");
  t.storage_offset = static_cast<uint64_t>(v.i);
  uint64_t numel = 1;
  for (int64_t d : v.shape) {
    if (d < 0) return fail("negative size");
    if (d != 0 && numel > kMaxElements / static_cast<uint64_t>(d)) return fail("too large");
    numel *= static_cast<uint64_t>(d);
  }
  int64_t expect = 1;  // contiguous strides, as torch's is_contiguous: size-1 dims may be any
  for (size_t i = v.shape.size(); numel > 0 && i-- > 0;) {
    if (v.shape[i] != 1 && v.stride[i] != expect) {
      return fail(absl::StrCat("is not contiguous (stride ", v.stride[i], " in dim ", i,
                               "); save it after .contiguous()"));
    }
    expect *= v.shape[i];
  }
  if (numel > 0 &&
      (t.storage_offset > t.storage_numel || numel > t.storage_numel - t.storage_offset)) {
    return fail(absl::StrCat("elements [", t.storage_offset, ", +", numel,
                             ") run past its storage of ", t.storage_numel));
  }
  return t;
}

}  // namespace

absl::StatusOr<std::vector<PickledTensor>> ParseTorchPickle(std::span<const std::byte> pickle) {
  Interpreter interp(pickle);
  absl::StatusOr<const Value*> top = interp.Run();
  if (!top.ok()) return top.status();
  if ((*top)->kind != Kind::kDict) {
    return Refuse(absl::StrCat("the pickle holds a ", KindName((*top)->kind),
                               ", not a state dict of tensors"));
  }
  std::vector<PickledTensor> out;
  std::set<std::string> names;
  std::map<std::string, std::pair<const StorageType*, uint64_t>> storages;
  const std::vector<Value*>& items = (*top)->items;
  for (size_t i = 0; i + 1 < items.size(); i += 2) {
    absl::StatusOr<PickledTensor> t = ToTensor(*items[i], *items[i + 1]);
    if (!t.ok()) return t.status();
    if (!names.insert(t->name).second) return Refuse(absl::StrCat("tensor '", t->name, "' twice"));
    const auto seen = std::make_pair(items[i + 1]->items[0]->storage, t->storage_numel);
    if (storages.emplace(t->storage_key, seen).first->second != seen) {
      return Refuse(absl::StrCat("tensor '", t->name, "': storage '", t->storage_key,
                                 "' appears with two types or sizes"));
    }
    out.push_back(std::move(*t));
  }
  return out;
}

}  // namespace mamba::engine
