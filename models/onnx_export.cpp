// ONNX export (models/onnx_export.h): a walk over the module tree that
// appends, for each module, the ONNX nodes of its eval-mode forward to an
// onnx::GraphProto, with its weights as initializers.
//
// The protobuf classes are Debian's libonnx_proto (libonnx-dev), generated
// from the ONNX schema by the ONNX project itself: linking them rather than
// generating our own copy from onnx.proto keeps a single definition of the
// onnx:: classes in a program that also links ONNX.
//
// Each model's structure is written out here as its forward computes it
// (models/resnet.cpp, models/mobilenet_v1.cpp); tests/models/test_onnx_export.cpp
// runs every exported model in ONNX Runtime against spruce's own forward, so
// the two cannot drift apart unnoticed.
//
// One file over ~500 lines on purpose: GraphWriter is a single walk whose
// model, layer and graph-plumbing methods call one another and share its name
// table; splitting it would spread one class over several files.
#include "onnx_export.h"

#define ONNX_ML 1  // Debian's libonnx_proto holds the ONNX-ML schema (a superset)
#include <cxxabi.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <set>
#include <typeinfo>

#include "../core/autograd.h"
#include "../core/error.h"
#include "../core/io/file.h"
#include "../layers/avg_pool2d.h"
#include "../layers/batch_norm2d.h"
#include "../layers/conv2d.h"
#include "../layers/flatten.h"
#include "../layers/global_avg_pool2d.h"
#include "../layers/linear.h"
#include "../layers/max_pool2d.h"
#include "../layers/relu.h"
#include "../layers/sequential.h"
#include "core/version.h"  // generated into the build tree
#include "mobilenet_v1.h"
#include "resnet.h"

namespace spruce::models {
namespace {

/// A value of the graph: its name and its shape per sample (batch excluded).
struct Value {
  std::string name;
  std::vector<int64_t> shape;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// A class name as written in C++ ("spruce::Dropout") from typeid's.
std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && name ? name.get() : mangled;
}

std::string type_name(const Module& m) { return demangle(typeid(m).name()); }

std::string join(const std::string& path, const std::string& name) {
  return path.empty() ? name : path + "." + name;
}

/// The values the forward uses: weight * mask when the parameter is masked.
std::vector<float> masked_values(const Module& m, const std::string& param) {
  const Tensor w = m.parameter(param);
  std::vector<float> v(w.span().begin(), w.span().end());
  if (const Tensor mask = m.mask(param); mask.defined())
    for (size_t i = 0; i < v.size(); ++i) v[i] *= mask.span()[i];
  return v;
}

std::vector<float> values(const Tensor& t) { return {t.span().begin(), t.span().end()}; }

class GraphWriter {
 public:
  GraphWriter(onnx::GraphProto& graph, const OnnxExportOptions& options)
      : graph_(graph), options_(options), names_{options.input_name, options.output_name} {}

  /// Appends the nodes of `m` (dotted name `path`) applied to `x`.
  Value module(const Module& m, const std::string& path, const Value& x) {
    if (auto* r = dynamic_cast<const ResNet*>(&m)) return resnet(*r, path, x);
    if (auto* b = dynamic_cast<const BasicBlock*>(&m)) return basic_block(*b, path, x);
    if (auto* n = dynamic_cast<const MobileNetV1*>(&m)) return mobilenet(*n, path, x);
    if (auto* b = dynamic_cast<const DepthwiseSeparableBlock*>(&m))
      return separable_block(*b, path, x);
    if (auto* s = dynamic_cast<const Sequential*>(&m)) return sequential(*s, path, x);
    if (auto* c = dynamic_cast<const Conv2d*>(&m)) return conv(*c, path, nullptr, "", x);
    if (auto* b = dynamic_cast<const BatchNorm2d*>(&m)) return batch_norm(*b, path, x);
    if (dynamic_cast<const ReLU*>(&m)) return relu(path, x);
    if (auto* p = dynamic_cast<const MaxPool2d*>(&m)) return pool("MaxPool", p->options(), path, x);
    if (auto* p = dynamic_cast<const AvgPool2d*>(&m))
      return pool("AveragePool", p->options(), path, x);
    if (dynamic_cast<const GlobalAvgPool2d*>(&m)) return global_avg_pool(path, x);
    if (dynamic_cast<const Flatten*>(&m)) return flatten(path, x);
    if (auto* l = dynamic_cast<const Linear*>(&m)) return linear(*l, path, x);
    throw UsageError("ONNX export: '" + (path.empty() ? std::string("(the model)") : path) +
                     "' is a " + type_name(m) +
                     ", which the export does not support (it knows ResNet, MobileNetV1 and "
                     "Sequential chains of Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, "
                     "GlobalAvgPool2d, Flatten, Linear)");
  }

  int64_t nodes() const { return graph_.node_size(); }

 private:
  // ---- models ----

  Value resnet(const ResNet& net, const std::string& path, Value x) {
    x = relu(join(path, "relu"), conv(child<Conv2d>(net, path, "conv1"), join(path, "conv1"),
                                      &child<BatchNorm2d>(net, path, "bn1"), join(path, "bn1"), x));
    for (const char* stage : {"layer1", "layer2", "layer3"})
      x = sequential(child<Sequential>(net, path, stage), join(path, stage), x);
    x = global_avg_pool(join(path, "avgpool"), x);
    return linear(child<Linear>(net, path, "fc"), join(path, "fc"), x);
  }

  // relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), as BasicBlock::forward.
  Value basic_block(const BasicBlock& block, const std::string& path, const Value& x) {
    Value out = relu(join(path, "relu1"),
                     conv(child<Conv2d>(block, path, "conv1"), join(path, "conv1"),
                          &child<BatchNorm2d>(block, path, "bn1"), join(path, "bn1"), x));
    out = conv(child<Conv2d>(block, path, "conv2"), join(path, "conv2"),
               &child<BatchNorm2d>(block, path, "bn2"), join(path, "bn2"), out);
    Value residual = x;
    if (const Module* projection = find_child(block, "shortcut"))
      residual = module(*projection, join(path, "shortcut"), x);
    else if (block.shortcut_pad_channels() > 0)
      residual = shortcut_pad(join(path, "shortcut"), block.shortcut_pad_channels(), x);
    if (residual.shape != out.shape)
      throw UsageError("ONNX export: '" + path + "': the shortcut gives " +
                       shape_text(residual.shape) + " but the block's convs give " +
                       shape_text(out.shape));
    return relu(join(path, "relu2"), add(join(path, "add"), out, residual));
  }

  Value mobilenet(const MobileNetV1& net, const std::string& path, Value x) {
    x = relu(join(path, "relu"), conv(child<Conv2d>(net, path, "conv1"), join(path, "conv1"),
                                      &child<BatchNorm2d>(net, path, "bn1"), join(path, "bn1"), x));
    x = sequential(child<Sequential>(net, path, "layers"), join(path, "layers"), x);
    x = global_avg_pool(join(path, "avgpool"), x);
    return linear(child<Linear>(net, path, "linear"), join(path, "linear"), x);
  }

  Value separable_block(const DepthwiseSeparableBlock& block, const std::string& path, Value x) {
    x = relu(join(path, "relu1"),
             conv(child<Conv2d>(block, path, "conv1"), join(path, "conv1"),
                  &child<BatchNorm2d>(block, path, "bn1"), join(path, "bn1"), x));
    return relu(join(path, "relu2"),
                conv(child<Conv2d>(block, path, "conv2"), join(path, "conv2"),
                     &child<BatchNorm2d>(block, path, "bn2"), join(path, "bn2"), x));
  }

  // The children in order; a conv directly followed by a batch norm is one
  // Conv node when folding.
  Value sequential(const Sequential& seq, const std::string& path, Value x) {
    const auto children = seq.named_children();
    for (size_t i = 0; i < children.size(); ++i) {
      const auto& [name, m] = children[i];
      auto* c = dynamic_cast<const Conv2d*>(m);
      auto* bn = i + 1 < children.size() ? dynamic_cast<const BatchNorm2d*>(children[i + 1].second)
                                         : nullptr;
      if (c && bn) {
        x = conv(*c, join(path, name), bn, join(path, children[i + 1].first), x);
        ++i;
      } else {
        x = module(*m, join(path, name), x);
      }
    }
    return x;
  }

  // ---- layers ----

  /// conv(x), then `bn` (when given): folded into the conv's weight and bias
  /// (options_.fold_batch_norm) or as a BatchNormalization node after it.
  Value conv(const Conv2d& c, const std::string& path, const BatchNorm2d* bn,
             const std::string& bn_path, const Value& x) {
    if (x.shape.size() != 3 || x.shape[0] != c.in_channels())
      throw UsageError("ONNX export: '" + path + "' takes [" + std::to_string(c.in_channels()) +
                       ", H, W] per sample, but gets " + shape_text(x.shape));
    const int64_t k = c.kernel_size(), s = c.options().stride, p = c.options().padding;
    const int64_t h = (x.shape[1] + 2 * p - k) / s + 1, w = (x.shape[2] + 2 * p - k) / s + 1;
    if (x.shape[1] + 2 * p < k || x.shape[2] + 2 * p < k)
      throw UsageError("ONNX export: '" + path + "': its " + std::to_string(k) + "x" +
                       std::to_string(k) + " kernel does not fit the " + shape_text(x.shape) +
                       " input");
    const int64_t out = c.out_channels();
    std::vector<float> weight = masked_values(c, "weight");
    std::vector<float> bias;
    if (c.bias().defined()) bias = values(c.bias());
    const bool fold = bn && options_.fold_batch_norm;
    if (fold) {
      check_features(*bn, bn_path, out);
      // bn(conv(x)) = scale * (W x + b - mean) + beta per output channel,
      // scale = gamma / sqrt(var + eps): W' = scale W, b' = beta + scale (b - mean).
      if (bias.empty()) bias.assign(static_cast<size_t>(out), 0.f);
      const BnValues v = bn_values(*bn);
      const size_t per_channel = weight.size() / static_cast<size_t>(out);
      for (int64_t o = 0; o < out; ++o) {
        const double scale = v.gamma[o] / std::sqrt(static_cast<double>(v.var[o]) + v.eps);
        for (size_t j = 0; j < per_channel; ++j) {
          float& wj = weight[static_cast<size_t>(o) * per_channel + j];
          wj = static_cast<float>(scale * wj);
        }
        bias[o] =
            static_cast<float>(v.beta[o] + scale * (static_cast<double>(bias[o]) - v.mean[o]));
      }
    }
    const std::vector<int64_t> wshape = c.weight().shape();
    std::vector<std::string> inputs{x.name,
                                    float_initializer(join(path, "weight"), wshape, weight)};
    if (!bias.empty()) inputs.push_back(float_initializer(join(path, "bias"), {out}, bias));
    onnx::NodeProto& n = node("Conv", path, inputs);
    ints_attribute(n, "kernel_shape", {k, k});
    ints_attribute(n, "strides", {s, s});
    ints_attribute(n, "pads", {p, p, p, p});
    ints_attribute(n, "dilations", {1, 1});
    int_attribute(n, "group", c.options().groups);
    Value y{n.output(0), {out, h, w}};
    if (bn && !fold) y = batch_norm(*bn, bn_path, y);
    return y;
  }

  Value batch_norm(const BatchNorm2d& bn, const std::string& path, const Value& x) {
    if (x.shape.empty()) throw UsageError("ONNX export: '" + path + "' gets a scalar per sample");
    check_features(bn, path, x.shape[0]);
    const BnValues v = bn_values(bn);
    const std::vector<int64_t> c{bn.num_features()};
    onnx::NodeProto& n = node("BatchNormalization", path,
                              {x.name, float_initializer(join(path, "weight"), c, v.gamma),
                               float_initializer(join(path, "bias"), c, v.beta),
                               float_initializer(join(path, "running_mean"), c, v.mean),
                               float_initializer(join(path, "running_var"), c, v.var)});
    float_attribute(n, "epsilon", bn.options().eps);
    return {n.output(0), x.shape};
  }

  Value relu(const std::string& path, const Value& x) {
    return {node("Relu", path, {x.name}).output(0), x.shape};
  }

  Value add(const std::string& path, const Value& a, const Value& b) {
    return {node("Add", path, {a.name, b.name}).output(0), a.shape};
  }

  /// ops::shortcut_pad: x[:, :, ::2, ::2] (Slice) with (channels - C) / 2 zero
  /// channels on each side (Pad).
  Value shortcut_pad(const std::string& path, int64_t channels, const Value& x) {
    const int64_t c = x.shape.at(0), side = (channels - c) / 2;
    const int64_t end = std::numeric_limits<int64_t>::max();  // "to the end" in Slice
    const std::string slice = join(path, "subsample");
    onnx::NodeProto& s = node("Slice", slice,
                              {x.name, int_initializer(join(slice, "starts"), {0, 0}),
                               int_initializer(join(slice, "ends"), {end, end}),
                               int_initializer(join(slice, "axes"), {2, 3}),
                               int_initializer(join(slice, "steps"), {2, 2})});
    const std::string pad = join(path, "pad");
    onnx::NodeProto& p =
        node("Pad", pad,
             {s.output(0), int_initializer(join(pad, "pads"), {0, side, 0, 0, 0, side, 0, 0})});
    return {p.output(0), {channels, (x.shape.at(1) + 1) / 2, (x.shape.at(2) + 1) / 2}};
  }

  Value pool(const char* op, const ops::Pool2dOptions& o, const std::string& path, const Value& x) {
    if (x.shape.size() != 3 || x.shape[1] + 2 * o.padding < o.kernel ||
        x.shape[2] + 2 * o.padding < o.kernel)
      throw UsageError("ONNX export: '" + path + "' takes [C, H, W] per sample with H, W >= " +
                       std::to_string(o.kernel - 2 * o.padding) + ", but gets " +
                       shape_text(x.shape));
    onnx::NodeProto& n = node(op, path, {x.name});
    ints_attribute(n, "kernel_shape", {o.kernel, o.kernel});
    ints_attribute(n, "strides", {o.stride, o.stride});
    ints_attribute(n, "pads", {o.padding, o.padding, o.padding, o.padding});
    // spruce's avg_pool2d divides by kernel * kernel, padded cells included.
    if (std::string(op) == "AveragePool") int_attribute(n, "count_include_pad", 1);
    return {n.output(0),
            {x.shape[0], (x.shape[1] + 2 * o.padding - o.kernel) / o.stride + 1,
             (x.shape[2] + 2 * o.padding - o.kernel) / o.stride + 1}};
  }

  /// [C, H, W] -> [C]: GlobalAveragePool ([C, 1, 1]) then Flatten.
  Value global_avg_pool(const std::string& path, const Value& x) {
    if (x.shape.size() != 3)
      throw UsageError("ONNX export: '" + path + "' takes [C, H, W] per sample, but gets " +
                       shape_text(x.shape));
    const Value pooled{node("GlobalAveragePool", path, {x.name}).output(0), {x.shape[0], 1, 1}};
    return flatten(join(path, "flatten"), pooled);
  }

  Value flatten(const std::string& path, const Value& x) {
    onnx::NodeProto& n = node("Flatten", path, {x.name});
    int_attribute(n, "axis", 1);
    int64_t size = 1;
    for (int64_t d : x.shape) size *= d;
    return {n.output(0), {size}};
  }

  /// x W^T + b as Gemm(transB = 1).
  Value linear(const Linear& l, const std::string& path, const Value& x) {
    if (x.shape.size() != 1 || x.shape[0] != l.in_features())
      throw UsageError("ONNX export: '" + path + "' takes [" + std::to_string(l.in_features()) +
                       "] per sample, but gets " + shape_text(x.shape));
    std::vector<std::string> inputs{
        x.name,
        float_initializer(join(path, "weight"), l.weight().shape(), masked_values(l, "weight"))};
    if (l.bias().defined())
      inputs.push_back(float_initializer(join(path, "bias"), {l.out_features()}, values(l.bias())));
    onnx::NodeProto& n = node("Gemm", path, inputs);
    int_attribute(n, "transB", 1);
    return {n.output(0), {l.out_features()}};
  }

  // ---- module tree ----

  static const Module* find_child(const Module& m, const std::string& name) {
    for (const auto& [n, c] : m.named_children())
      if (n == name) return c;
    return nullptr;
  }

  template <class T>
  static const T& child(const Module& m, const std::string& path, const std::string& name) {
    const Module* c = find_child(m, name);
    const T* t = dynamic_cast<const T*>(c);
    if (!t)
      throw UsageError("ONNX export: '" + join(path, name) + "' is " +
                       (c ? "a " + type_name(*c) : std::string("missing")) + ", expected a " +
                       demangle(typeid(T).name()));
    return *t;
  }

  struct BnValues {
    std::vector<float> gamma, beta, mean, var;
    double eps;
  };

  static BnValues bn_values(const BatchNorm2d& bn) {
    const int64_t c = bn.num_features();
    BnValues v{bn.weight().defined() ? values(bn.weight()) : std::vector<float>(c, 1.f),
               bn.bias().defined() ? values(bn.bias()) : std::vector<float>(c, 0.f),
               values(bn.running_mean()), values(bn.running_var()), bn.options().eps};
    return v;
  }

  static void check_features(const BatchNorm2d& bn, const std::string& path, int64_t channels) {
    if (bn.num_features() != channels)
      throw UsageError("ONNX export: '" + path + "' normalises " +
                       std::to_string(bn.num_features()) + " channels, but gets " +
                       std::to_string(channels));
  }

  // ---- graph plumbing ----

  /// A node named `path` whose one output is named after it (made unique).
  onnx::NodeProto& node(const std::string& op, const std::string& path,
                        const std::vector<std::string>& inputs) {
    onnx::NodeProto& n = *graph_.add_node();
    n.set_op_type(op);
    const std::string name = unique(path.empty() ? op : path);
    n.set_name(name);
    for (const std::string& in : inputs) n.add_input(in);
    n.add_output(name);
    return n;
  }

  std::string unique(const std::string& name) {
    std::string u = name;
    for (int i = 1; !names_.insert(u).second; ++i) u = name + "_" + std::to_string(i);
    return u;
  }

  std::string float_initializer(const std::string& name, const std::vector<int64_t>& dims,
                                const std::vector<float>& v) {
    onnx::TensorProto& t = tensor(name, dims, onnx::TensorProto::FLOAT);
    t.set_raw_data(v.data(), v.size() * sizeof(float));  // little-endian, as ONNX wants
    return t.name();
  }

  std::string int_initializer(const std::string& name, const std::vector<int64_t>& v) {
    onnx::TensorProto& t = tensor(name, {static_cast<int64_t>(v.size())}, onnx::TensorProto::INT64);
    t.set_raw_data(v.data(), v.size() * sizeof(int64_t));
    return t.name();
  }

  onnx::TensorProto& tensor(const std::string& name, const std::vector<int64_t>& dims,
                            onnx::TensorProto::DataType type) {
    onnx::TensorProto& t = *graph_.add_initializer();
    t.set_name(unique(name));
    t.set_data_type(type);
    for (int64_t d : dims) t.add_dims(d);
    return t;
  }

  static void ints_attribute(onnx::NodeProto& n, const char* name, std::vector<int64_t> v) {
    onnx::AttributeProto& a = *n.add_attribute();
    a.set_name(name);
    a.set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a.add_ints(x);
  }
  static void int_attribute(onnx::NodeProto& n, const char* name, int64_t v) {
    onnx::AttributeProto& a = *n.add_attribute();
    a.set_name(name);
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(v);
  }
  static void float_attribute(onnx::NodeProto& n, const char* name, float v) {
    onnx::AttributeProto& a = *n.add_attribute();
    a.set_name(name);
    a.set_type(onnx::AttributeProto::FLOAT);
    a.set_f(v);
  }

  onnx::GraphProto& graph_;
  const OnnxExportOptions& options_;
  std::set<std::string> names_;
};

/// A graph input or output: float [batch, shape...], the batch symbolic.
void describe_value(onnx::ValueInfoProto& info, const std::string& name,
                    const std::vector<int64_t>& shape) {
  info.set_name(name);
  onnx::TypeProto_Tensor& t = *info.mutable_type()->mutable_tensor_type();
  t.set_elem_type(onnx::TensorProto::FLOAT);
  onnx::TensorShapeProto& s = *t.mutable_shape();
  s.add_dim()->set_dim_param("batch");
  for (int64_t d : shape) s.add_dim()->set_dim_value(d);
}

}  // namespace

bool onnx_export_available() { return true; }

std::string onnx_model_bytes(const Module& model, const std::vector<int64_t>& sample_shape,
                             const OnnxExportOptions& options, OnnxExportSummary* summary) {
  if (sample_shape.empty())
    throw UsageError("ONNX export: the sample shape is empty (expected e.g. [3, 32, 32])");
  for (int64_t d : sample_shape)
    if (d <= 0)
      throw UsageError("ONNX export: the sample shape " + shape_text(sample_shape) +
                       " has a dimension below 1");
  if (options.input_name.empty() || options.output_name.empty() ||
      options.input_name == options.output_name)
    throw UsageError("ONNX export: the input and output names must be distinct and not empty");

  onnx::ModelProto proto;
  proto.set_ir_version(kOnnxIrVersion);
  onnx::OperatorSetIdProto& opset = *proto.add_opset_import();
  opset.set_domain("");
  opset.set_version(kOnnxOpset);
  proto.set_producer_name("spruce");
  proto.set_producer_version(SPRUCE_VERSION);
  onnx::GraphProto& graph = *proto.mutable_graph();
  graph.set_name("spruce");
  graph.set_doc_string(std::string("Inference graph exported by spruce ") + SPRUCE_VERSION +
                       (options.fold_batch_norm ? "; batch norms folded into the convs" : "") +
                       "; pruned weights are zeros in the dense initializers");

  GraphWriter writer(graph, options);
  Value out = writer.module(model, "", {options.input_name, sample_shape});
  // The last node's output becomes the graph's output (an Identity when the
  // model computed nothing, e.g. an empty Sequential).
  if (graph.node_size() > 0 && graph.node(graph.node_size() - 1).output(0) == out.name) {
    graph.mutable_node(graph.node_size() - 1)->set_output(0, options.output_name);
  } else {
    onnx::NodeProto& id = *graph.add_node();
    id.set_op_type("Identity");
    id.set_name(options.output_name);
    id.add_input(out.name);
    id.add_output(options.output_name);
  }
  describe_value(*graph.add_input(), options.input_name, sample_shape);
  describe_value(*graph.add_output(), options.output_name, out.shape);

  std::string bytes;
  if (!proto.SerializeToString(&bytes))
    throw Error("ONNX export: the model does not fit in a protobuf message (2 GiB)");
  if (summary) {
    *summary = {};
    summary->output_shape = out.shape;
    summary->nodes = graph.node_size();
    for (const onnx::TensorProto& t : graph.initializer()) {
      if (t.data_type() != onnx::TensorProto::FLOAT) continue;
      const std::string& raw = t.raw_data();
      const size_t n = raw.size() / sizeof(float);
      summary->parameters += static_cast<int64_t>(n);
      for (size_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, raw.data() + i * sizeof(float), sizeof(float));
        summary->zero_parameters += v == 0.f;
      }
    }
    summary->bytes = bytes.size();
  }
  return bytes;
}

OnnxExportSummary export_onnx(const Module& model, const std::vector<int64_t>& sample_shape,
                              const std::string& path, const OnnxExportOptions& options) {
  OnnxExportSummary summary;
  const std::string bytes = onnx_model_bytes(model, sample_shape, options, &summary);
  io::AtomicFile file(path);
  file.write(bytes);
  file.commit();
  return summary;
}

}  // namespace spruce::models
