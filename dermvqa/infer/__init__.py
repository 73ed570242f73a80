"""dermvqa.infer"""
