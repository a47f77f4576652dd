// `ranzcr eval`, `ranzcr predict`, `ranzcr score`.
#include <cstdio>
#include <filesystem>

#include "train/cli/commands.h"
#include "train/config.h"
#include "train/predict.h"
#include "train/trainer.h"

namespace rz::cli {

void add_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Per-label AUC of a run's checkpoint on its validation fold");
  auto run = std::make_shared<std::string>();
  auto which = std::make_shared<std::string>("best");
  auto weights = std::make_shared<std::string>();
  auto fold = std::make_shared<int64_t>(-1);
  auto sets = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--run", *run, "run folder (its config.toml says model, data and fold)")->required();
  cmd->add_option("--ckpt", *which, "best or last, or a path to any checkpoint / weights file");
  cmd->add_option("--fold", *fold, "evaluate on this fold instead of the run's");
  cmd->add_option("--set", *sets, "override a config key (e.g. data.cache_dir=...)");
  auto device = std::make_shared<std::string>();
  cmd->add_option("--device", *device, "cpu, cuda, cuda:N or auto (default: the run's run.device)");
  cmd->callback([=] {
    namespace fs = std::filesystem;
    TrainConfig cfg = load_config((fs::path(*run) / "config.toml").string());
    if (!device->empty()) cfg.run.device = *device;
    for (const auto& s : *sets) apply_override(cfg, s);
    std::string path = *which;
    if (path == "best" || path == "last") path = (fs::path(*run) / (path + ".ckpt")).string();
    const EvalResult r = evaluate(cfg, path, *fold);
    AucReport rep;
    rep.per_label = r.record.auc;
    rep.mean = r.record.mean_auc;
    rep.defined_labels = 0;
    for (const auto& a : rep.per_label) rep.defined_labels += a.has_value();
    std::printf("%s on fold %lld (%lld studies), loss %.4f:\n%s", path.c_str(),
                static_cast<long long>(*fold >= 0 ? *fold : cfg.data.fold),
                static_cast<long long>(r.studies), r.record.val_loss, format_auc_table(rep).c_str());
  });
}

void add_predict(CLI::App& app) {
  auto* cmd = app.add_subcommand("predict", "Write a sample_submission-format CSV for a folder of images");
  auto o = std::make_shared<PredictOptions>();
  cmd->add_option("--weights", o->weights, "checkpoint or timm-format safetensors")->required();
  cmd->add_option("--model", o->model, "model name");
  cmd->add_option("--img-size", o->img_size, "input size")->check(CLI::Range(32, 4096));
  cmd->add_option("--in-chans", o->in_chans, "input channels")->check(CLI::Range(1, 3));
  cmd->add_option("--images", o->images_dir, "folder of <uid>.jpg images")->required();
  cmd->add_option("--sample-submission", o->sample_submission, "UIDs and their order (optional)");
  cmd->add_option("--out", o->out, "submission CSV to write")->required();
  cmd->add_flag("--tta-hflip", o->tta_hflip, "average with the horizontally flipped image");
  cmd->add_option("--batch", o->batch, "batch size")->check(CLI::PositiveNumber);
  cmd->add_option("--device", o->device, "cpu, cuda, cuda:N or auto");
  cmd->add_option("--precision", o->precision, "fp32 or bf16 (CUDA)")->check(CLI::IsMember({"fp32", "bf16"}));
  add_image_budget_option(cmd);
  cmd->callback([o] {
    const auto r = run_predict(*o);
    std::printf("predict: %lld images in %.1f s -> %s\n", static_cast<long long>(r.images), r.seconds,
                o->out.c_str());
  });
}

void add_score(CLI::App& app) {
  auto* cmd = app.add_subcommand("score", "Per-label and mean AUC of a predictions CSV");
  auto pred = std::make_shared<std::string>();
  auto truth = std::make_shared<std::string>();
  cmd->add_option("--pred", *pred, "predictions (sample_submission format)")->required();
  cmd->add_option("--truth", *truth, "labels (train.csv format)")->required();
  cmd->callback([=] {
    const AucReport r = score_submission(*pred, *truth);
    for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    std::printf("%s", format_auc_table(r).c_str());
  });
}

}  // namespace rz::cli
