#include "train/demo.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <thread>

#include "data/cache.h"
#include "data/ranzcr_csv.h"
#include "data/synth.h"
#include "train/checkpoint.h"
#include "train/compute.h"
#include "train/config.h"
#include "train/demo_report.h"
#include "train/run_folder.h"
#include "data/draw.h"

namespace fs = std::filesystem;

namespace rz {

namespace {
std::string auc_cell(const std::optional<double>& a) {
  char b[16];
  if (!a) return "     -";
  std::snprintf(b, sizeof b, "%6.3f", *a);
  return b;
}
// Up to `count` annotated validation studies, picked greedily so that together they
// show as many labels as possible: the cached image (what the models read) with the
// teacher's annotations drawn, beside the plain one, both at the cache size.
std::vector<DemoSampleImage> demo_samples(const std::string& data_dir, const std::string& cache_dir,
                                          const TrainConfig& teacher, const std::vector<std::string>& uids,
                                          size_t count) {
  const auto train = read_ranzcr_train((fs::path(data_dir) / "train.csv").string());
  const auto anns = read_ranzcr_annotations((fs::path(data_dir) / "train_annotations.csv").string(), train);
  const auto cache = data::ImageCache::open(cache_dir);
  std::vector<bool> used(uids.size(), false), shown(kRanzcrLabels.size(), false);
  std::vector<DemoSampleImage> out;
  while (out.size() < count) {
    int64_t pick = -1, gain = -1;
    for (size_t i = 0; i < uids.size(); ++i) {
      const int64_t si = train.find(uids[i]);
      if (used[i] || si < 0 || cache.find(uids[i]) < 0) continue;
      int64_t g = 0;
      for (size_t l = 0; l < kRanzcrLabels.size(); ++l)
        g += train.studies[static_cast<size_t>(si)].labels[l] > 0.5f && !shown[l];
      if (g > gain) gain = g, pick = static_cast<int64_t>(i);
    }
    if (pick < 0) break;
    used[static_cast<size_t>(pick)] = true;
    const auto& study = train.studies[static_cast<size_t>(train.find(uids[static_cast<size_t>(pick)]))];
    for (size_t l = 0; l < kRanzcrLabels.size(); ++l) shown[l] = shown[l] || study.labels[l] > 0.5f;
    const int64_t row = cache.find(study.uid);
    const auto& entry = cache.entry(row);
    DemoSampleImage s;
    s.uid = study.uid;
    s.plain = cache.load(row);
    s.annotated = data::draw_annotations(
        s.plain, anns.by_study[static_cast<size_t>(train.find(study.uid))], entry.orig_h, entry.orig_w,
        data::parse_annotation_style(teacher.stage.annotation_style),
        static_cast<float>(teacher.stage.annotation_thickness));
    s.labels = study.labels;
    out.push_back(std::move(s));
  }
  return out;
}
bool has_override(const std::vector<std::string>& sets, const std::string& key) {
  return std::any_of(sets.begin(), sets.end(), [&](const std::string& kv) { return kv.rfind(key + "=", 0) == 0; });
}
}  // namespace

DemoPlan make_demo_plan(const DemoOptions& opt, const std::string& device, const std::string& precision) {
  const fs::path root(opt.out_dir);
  DemoPlan plan;
  // Presets: the CPU one fits a 2-core machine in minutes; --full is the
  // real model at a real resolution, for a GPU.
  // --full is sized for 10 minutes on one H100 or H200 (see DemoPlan::training_images).
  const int64_t n = opt.n_images > 0 ? opt.n_images : (opt.full ? 3000 : 1200);
  const int64_t img = opt.img_size > 0 ? opt.img_size : (opt.full ? 512 : 128);
  // Images are drawn a little larger than the cache, the cache a little
  // larger than the crops (the random resized crop keeps 85-100% of the area).
  const int64_t cache_size = img * 5 / 4;
  const int64_t synth_size = opt.full ? 768 : cache_size;
  const int64_t epochs = opt.epochs > 0 ? opt.epochs : (opt.full ? 6 : 20);

  data::SynthOptions& so = plan.synth;
  so.out_dir = (root / "data").string();
  so.n = n;
  so.n_test = opt.full ? 250 : 50;
  so.size = synth_size;
  so.seed = opt.seed;
  so.difficulty = opt.difficulty >= 0 ? opt.difficulty : 0.0;  // clear tubes: a small CPU model needs them
  // At the CPU preset's 160 px a real-proportion tube is under one pixel wide.
  so.tube_width_scale = opt.tube_width > 0 ? opt.tube_width : (opt.full ? 1.0 : 2.0);
  // Radio-opaque lines, as on real films: at 4x the default contrast a tube
  // stands out of the CPU preset's 128 px input, over the mediastinum too (see
  // bench/RESULTS.md, demo).
  so.tube_contrast = opt.tube_contrast > 0 ? opt.tube_contrast : (opt.full ? 1.0 : 4.0);
  // Half the studies with devices annotated: the teacher and both students train on
  // those, the fine-tune on all of them.
  so.annotated_fraction = opt.annotated_fraction >= 0 ? opt.annotated_fraction : (opt.full ? 0.8 : 0.5);
  data::PrepOptions& po = plan.prep;
  po.data_dir = so.out_dir;
  po.out_dir = (root / "cache").string();
  po.image_size = cache_size;
  po.threads = static_cast<int>(opt.threads);
  auto base = [&](const std::string& name, const std::string& kind) {
    TrainConfig c;
    c.run.name = name;
    c.run.out_dir = (root / "runs").string();
    c.run.seed = opt.seed;
    c.run.threads = opt.threads;
    c.run.device = device;
    c.run.precision = precision;
    c.model.name = opt.full ? "seresnet152d" : "seresnet_tiny";
    c.model.img_size = img;
    // The teacher's input: each device's lines in its own colour on the grayscale
    // image (data/draw.h, device style), so every model reads 3 channels. The
    // lines say where each device runs and ends, not its status: the teacher
    // learns to read the tip against the anatomy, and those are features a
    // student can learn to produce from the plain image (a colour per label
    // would hand the teacher the answer and give the student nothing to learn
    // from its features; bench/RESULTS.md, demo).
    c.model.in_chans = 3;
    c.stage.annotation_style = "device";
    c.stage.annotation_thickness = opt.full ? 6.0 : 3.0;
    c.data.dir = so.out_dir;
    c.data.cache_dir = po.out_dir;
    // Loader threads: 2 keep a small CPU model fed; a GPU needs more.
    c.data.workers = device.rfind("cuda", 0) == 0 ? std::max(2, static_cast<int>(std::thread::hardware_concurrency()) - 2) : 2;
    c.stage.kind = kind;
    c.optim.name = "adamw";
    c.optim.lr = opt.full ? 2e-4 : 2e-3;
    c.optim.weight_decay = 1e-4;
    c.sched.warmup_epochs = 0.5;
    c.sched.min_lr = c.optim.lr / 100;
    c.train.epochs = epochs;
    // Batches of 8 on the CPU: 437 studies make 54 steps an epoch instead of 13, at
    // the same cost per image; with 13 the students from scratch learn no CVC label.
    c.train.batch = opt.full ? 32 : 8;
    c.train.log_every = 1000000;  // per-epoch lines only
    c.aug.dropout_p = 0.0;
    for (const auto& kv : opt.sets) apply_override(c, kv);
    return c;
  };
  plan.teacher = base("teacher", "teacher");
  // The teacher sees where the devices are but must learn each status from the tip's
  // position (CVC tips around the cavo-atrial junction are a few pixels apart at
  // 128 px): on the CPU it needs 4x the students' passes over its studies.
  plan.teacher.train.epochs = opt.teacher_epochs > 0 ? opt.teacher_epochs : (opt.full ? epochs : 4 * epochs);
  // The students' peak learning rate, 1.5x the teacher's on the CPU: the
  // distilled student has to move away from the teacher's annotated-image
  // weights, and the control does as well at 3e-3 as at 2e-3 (bench/RESULTS.md, demo).
  auto student = [&](const std::string& name, const std::string& kind) {
    TrainConfig c = base(name, kind);
    if (!opt.full && !has_override(opt.sets, "optim.lr")) {
      c.optim.lr = 3e-3;
      if (!has_override(opt.sets, "sched.min_lr")) c.sched.min_lr = c.optim.lr / 100;
    }
    return c;
  };
  plan.distilled = student("student_distilled", "student-kd");
  plan.distilled.stage.teacher = (fs::path(plan.teacher.run.out_dir) / "teacher" / "best.ckpt").string();
  // The student starts from the teacher's weights (the staged transfer) and keeps its
  // features close to the teacher's on the paired annotated image (the feature MSE).
  if (plan.distilled.stage.init.empty()) plan.distilled.stage.init = plan.distilled.stage.teacher;
  // The control: the same student, the same studies and schedule, no teacher.
  plan.control = student("student_control", "finetune");
  plan.control.data.annotated_only = true;
  plan.finetuned = student("student_finetuned", "finetune");
  plan.finetuned.stage.init = (fs::path(plan.teacher.run.out_dir) / "student_distilled" / "best.ckpt").string();
  plan.finetuned.train.epochs = std::max<int64_t>(1, epochs / 2);
  plan.finetuned.optim.lr /= 4;
  plan.eval_teacher = base("eval", "teacher");
  plan.eval_plain = base("eval", "finetune");
  // Every key checked here; whether the device exists is checked when a stage starts.
  for (const TrainConfig* c : {&plan.teacher, &plan.distilled, &plan.control, &plan.finetuned}) {
    TrainConfig v = *c;
    v.run.device = "cpu";
    validate_config(v);
  }
  return plan;
}

double DemoPlan::training_images() const {
  // Studies with at least one device: 1 - P(no ETT) P(no NGT) P(no CVC) P(no Swan-Ganz)
  // = 1 - 0.64 * 0.58 * 0.12 * 0.94 (data/synth.cpp's prevalences); 4 of 5 folds train.
  const double train_studies = 0.8 * static_cast<double>(synth.n);
  const double annotated = train_studies * (1.0 - 0.64 * 0.58 * 0.12 * 0.94) * synth.annotated_fraction;
  const double kTeacherForward = 0.35;  // a frozen forward's share of a training step
  return annotated * static_cast<double>(teacher.train.epochs) +
         annotated * static_cast<double>(distilled.train.epochs) * (1.0 + kTeacherForward) +
         annotated * static_cast<double>(control.train.epochs) +
         train_studies * static_cast<double>(finetuned.train.epochs);
}

std::string DemoPlan::str() const {
  std::string s;
  char line[300];
  std::snprintf(line, sizeof line, "data: %lld synthetic studies (+%lld test) at %lld px, tube contrast %.2g, width %.2g; cache at %lld px\n",
                static_cast<long long>(synth.n), static_cast<long long>(synth.n_test), static_cast<long long>(synth.size),
                synth.tube_contrast, synth.tube_width_scale, static_cast<long long>(prep.image_size));
  s += line;
  for (const TrainConfig* c : {&teacher, &distilled, &control, &finetuned}) {
    std::snprintf(line, sizeof line,
                  "stage %-18s %-11s %s at %lld px, in_chans %lld, %lld epochs, batch %lld, %s lr %.3g, %s %s%s%s\n",
                  c->run.name.c_str(), c->stage.kind.c_str(), c->model.name.c_str(),
                  static_cast<long long>(c->model.img_size), static_cast<long long>(c->model.in_chans),
                  static_cast<long long>(c->train.epochs), static_cast<long long>(c->train.batch),
                  c->optim.name.c_str(), c->optim.lr, c->run.device.c_str(), c->run.precision.c_str(),
                  c->stage.teacher.empty() ? "" : (", teacher " + c->stage.teacher).c_str(),
                  c->stage.init.empty() ? "" : (", init " + c->stage.init).c_str());
    s += line;
  }
  std::snprintf(line, sizeof line,
                "work: about %.0f training-step images in all (a distilled step counts its teacher's forward)\n",
                training_images());
  return s + line;
}

DemoResult run_demo(const DemoOptions& opt, const std::function<void(const std::string&)>& log) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path root(opt.out_dir);
  const std::string precision =
      !opt.precision.empty() ? opt.precision : (parse_device(opt.device).is_cuda() ? "bf16" : "fp32");
  const Compute compute = resolve_compute(opt.device, precision);
  const DemoPlan plan = make_demo_plan(opt, compute.device.str(), precision);
  const int64_t n = plan.synth.n, img = plan.teacher.model.img_size;
  const int64_t cache_size = plan.prep.image_size;
  const data::SynthOptions& so = plan.synth;
  const data::PrepOptions& po = plan.prep;

  const auto d0 = std::chrono::steady_clock::now();
  if (!fs::exists(root / "data" / "train.csv")) {
    log("demo: writing " + std::to_string(n) + " synthetic studies to " + so.out_dir);
    // The demo owns its data folder: images left by an interrupted earlier
    // synth (train.csv is written last) are replaced.
    data::SynthOptions fresh = so;
    fresh.overwrite = true;
    ProgressLine progress("demo: synth", so.n + so.n_test, "img", opt.progress);
    const auto r = data::run_synth(fresh, [&](int64_t done, int64_t) { progress.update(done); });
    progress.close();
    log(data::format_synth_report(r));
  }
  ProgressLine prep_progress("demo: prep", 0, "img", opt.progress);
  const auto pr = data::run_prep(
      po,
      [&](int64_t done, int64_t total, int64_t) {
        prep_progress.set_total(total);
        prep_progress.update(done);
      },
      [&](const std::string& w) {
        prep_progress.clear();
        log("warning: " + w);
      });
  prep_progress.close();
  const double data_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - d0).count();
  log("demo: cache of " + std::to_string(pr.images) + " images at " + std::to_string(cache_size) + " px");

  log("demo: computing on " + compute.str());
  TrainHooks hooks{.log = log, .progress = opt.progress};
  struct Stage {
    fs::path dir;
    std::vector<EpochRecord> history;
    double seconds = 0;  // wall time here, or the logged epochs' when it was already trained
    bool logged = false;
  };
  auto run_stage = [&](const TrainConfig& c) {
    const fs::path dir = fs::path(c.run.out_dir) / c.run.name;
    const auto s0 = std::chrono::steady_clock::now();
    Stage st{dir, {}, 0, false};
    if (fs::exists(dir / "last.ckpt")) {
      const auto saved = read_checkpoint_state((dir / "last.ckpt").string());
      if (saved.epoch >= c.train.epochs) {
        log("demo: " + c.run.name + " already trained (" + dir.string() + ")");
        st.history = repair_run_logs(dir.string(), saved.epoch).history;
        for (const auto& e : st.history) st.seconds += e.seconds;
        st.logged = true;
        return st;
      }
      log("demo: continuing " + c.run.name);
      st.history = resume(dir.string(), hooks).history;
    } else {
      log("demo: stage " + c.run.name + " (" + c.stage.kind + ")");
      st.history = train(c, hooks).history;
    }
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
    return st;
  };

  const TrainConfig& teacher_cfg = plan.teacher;
  const Stage teacher = run_stage(teacher_cfg);
  const TrainConfig& kd = plan.distilled;
  const Stage distilled = run_stage(kd);
  const Stage control_st = run_stage(plan.control);
  const TrainConfig& ft = plan.finetuned;
  const Stage ft_st = run_stage(ft);

  // All students on the same held-out fold, plain images; the teacher on the
  // annotated images of that fold (its input).
  const auto e0 = std::chrono::steady_clock::now();
  DemoResult r;
  const TrainConfig& plain = plan.eval_plain;
  r.teacher = evaluate(plan.eval_teacher, (teacher.dir / "best.ckpt").string());
  r.control = evaluate(plain, (control_st.dir / "best.ckpt").string());
  r.distilled = evaluate(plain, (distilled.dir / "best.ckpt").string());
  r.finetuned = evaluate(plain, (ft_st.dir / "best.ckpt").string());
  const double eval_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count();

  // The side-by-side report.
  DemoReportInput rep;
  rep.title = std::string("ranzcr demo") + (opt.full ? " --full" : "") + ": teacher, students, fine-tune";
  char setup[700];
  std::snprintf(setup, sizeof setup,
                "%lld synthetic studies (seed %llu, %.0f%% of those with devices annotated), %s at %lld px on %s; "
                "epochs: teacher %lld, students %lld, fine-tune %lld; held-out fold %lld of 5. The teacher and both "
                "students train on the annotated studies (the teacher reads the line annotations drawn on them, %s "
                "style; the students the plain images; the distilled student starts from the teacher's weights "
                "and matches its features, the control starts from scratch), the fine-tune on all studies.",
                static_cast<long long>(n), static_cast<unsigned long long>(opt.seed), 100.0 * so.annotated_fraction,
                teacher_cfg.model.name.c_str(), static_cast<long long>(img), compute.str().c_str(),
                static_cast<long long>(teacher_cfg.train.epochs), static_cast<long long>(kd.train.epochs),
                static_cast<long long>(ft.train.epochs), static_cast<long long>(teacher_cfg.data.fold),
                teacher_cfg.stage.annotation_style.c_str());
  rep.setup = setup;
  auto add_run = [&](const std::string& name, const std::string& input, const EvalResult& e, const Stage& st) {
    rep.runs.push_back(
        {name, input, e.record.auc, e.record.mean_auc, e.studies, e.roc, st.history, st.seconds, st.logged});
  };
  add_run("teacher", "annotated images", r.teacher, teacher);
  add_run("control student", "plain, no teacher", r.control, control_st);
  add_run("distilled student", "plain; teacher's weights + features", r.distilled, distilled);
  add_run("fine-tuned student", "plain, all studies", r.finetuned, ft_st);
  rep.other_seconds = {{"synth + prep", data_seconds}, {"evaluation", eval_seconds}};
  rep.samples = demo_samples(so.out_dir, po.out_dir, teacher_cfg, r.teacher.uids, 6);
  write_demo_report((root / "report.html").string(), rep);
  log("demo: report " + (root / "report.html").string());

  std::string t = "held-out fold 0 AUC (teacher: annotated images; students: plain images)\n";
  char line[200];
  std::snprintf(line, sizeof line, "  %-28s %8s %8s %9s %9s\n", "label", "teacher", "control",
                "distilled", "finetuned");
  t += line;
  for (size_t k = 0; k < kRanzcrLabels.size(); ++k) {
    std::snprintf(line, sizeof line, "  %-28s %8s %8s %9s %9s\n", std::string(kRanzcrLabels[k]).c_str(),
                  auc_cell(r.teacher.record.auc[k]).c_str(), auc_cell(r.control.record.auc[k]).c_str(),
                  auc_cell(r.distilled.record.auc[k]).c_str(), auc_cell(r.finetuned.record.auc[k]).c_str());
    t += line;
  }
  std::snprintf(line, sizeof line, "  %-28s %8.4f %8.4f %9.4f %9.4f\n", "mean AUC", r.teacher.record.mean_auc,
                r.control.record.mean_auc, r.distilled.record.mean_auc, r.finetuned.record.mean_auc);
  t += line;
  std::snprintf(line, sizeof line, "  %-28s %8lld %8lld %9lld %9lld\n", "validation studies",
                static_cast<long long>(r.teacher.studies), static_cast<long long>(r.control.studies),
                static_cast<long long>(r.distilled.studies), static_cast<long long>(r.finetuned.studies));
  t += line;
  r.table = t;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace rz
