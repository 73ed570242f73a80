"""dermvqa.serve"""
