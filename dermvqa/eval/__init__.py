"""dermvqa.eval"""
