"""Training recipes: each module trains one registered model on ../shared/data and writes
its weights, its metrics record and its model card. Run: python -m medexport.models.recipes.NAME"""
