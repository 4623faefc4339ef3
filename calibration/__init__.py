"""Target-neutral quantization: calibration data, algorithms and the QuantPlan.

Modules (import them directly; this package imports nothing eagerly):

    datasets      calibration text -> token windows (CalibrationConfig)
    schemes       WeightScheme, ActivationScheme, Algorithm, ActivationMode, Observer
    recipe        Rule, Recipe, presets (int8, int4, 8da4w, w8a8), JSON/TOML recipe files
    rtn, gptq, awq, smoothquant, observers   the algorithms
    layout        Llama input groups and scale folding
    plan, plan_io, validate_plan             QuantPlan, persistence, validation
    build_plan    model + recipe + windows -> QuantPlan (phases.py, capture.py do the work)
    evaluate      perplexity, KL, top-1 agreement from logits
"""
